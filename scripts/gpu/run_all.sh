#!/usr/bin/env bash
# On the GPU machine (device tool: carry .whl), one stage per call: the device tool stops a command at 10 minutes,
# so every stage bounds its steps with `timeout` to end within ~9 and packs what it has into one file,
# $OUT/gpu_<stage>.tgz (or results/gpu_<stage>.tgz by hand), even when a step timed out.
#   bash scripts/gpu/run_all.sh all      # the first call of a 15-minute lease (a start costs ~1 of them), ~8 min: the CUDA
#                                        # tests (kernels vs the math path, the JVP, the CUDA-graph JVP), the bf16 step
#                                        # profile (JVP call eager vs CUDA graph vs torch.compile (moving digits); FM /
#                                        # MeanFlow / MeanFlow with the graphed
#                                        # JVP at 1x and 4x batch; GPU busy share) and the bench's bf16 throughput rows
#                                        # with the graphed variant, merged into results/bench_cuda.json
#   TRAIN_SECONDS=210 bash scripts/gpu/run_all.sh train  # the second call, at once (the machine stays warm 30 s):
#                                        # the moving-digits recipe on the GPU, image stage then video stage (bf16, batch
#                                        # 1024 / 512, the graphed JVP unless GRAPH=false, compiled with COMPILE=true,
#                                        # PREDICTION=u|x, default x),
#                                        # exported as a pipeline folder to score here (scripts/evaluate_digits.py; EVAL=1
#                                        # scores there). VIDEO_ARGS adds overrides to the video stage, MODEL_ARGS to both;
#                                        # POST_STEPS=N then post-trains it N steps on CUDA (mfvideo-post-train, stage 5
#                                        # of the bundled recipe; at most POST_SECONDS, default 90), as moving_digits_gpu_post
#   bash scripts/gpu/run_all.sh smoke    # scripts/gpu/smoke.py (the pipeline on CUDA vs CPU, a short CUDA training run
#                                        # loaded back) and scripts/gpu/ddp_check.py (2 processes, DDP gradients through
#                                        # the JVP; gloo on one GPU, where NCCL refuses 2 ranks): passed in session 21
#   bash scripts/gpu/run_all.sh profile  # the bf16 step profile at 1x and 4x batch (GPU busy share, kernel count, the
#                                        # JVP call replayed from a CUDA graph)
#   bash scripts/gpu/run_all.sh rest     # kernel tests, bf16 step profile, remaining bench sections (attention, long
#                                        # attention, clip latency, compile)
#   bash scripts/gpu/run_all.sh check    # CUDA tests (backend vs fp32 math path: value, tangent, gradient; bf16) and the
#                                        # bf16-vs-fp32 tangent error of a B/2 model (scripts/gpu/tangent_error.py)
#   bash scripts/gpu/run_all.sh bench    # scripts/bench.py: B/2 image and video rows, bf16, attention backends under JVP
# Device time is 15 minutes a task, starts and idle waits included.
set -uo pipefail
stage=${1:?usage: run_all.sh all|smoke|profile|rest|check|bench|train}
cd "$(dirname "$0")/../.."
out=/tmp/gpu_$stage; rm -rf "$out"; mkdir -p "$out"
dest=${OUT:-results}
pack() { tar czf "$dest/gpu_$stage.tgz" -C /tmp "gpu_$stage" && echo "packed $dest/gpu_$stage.tgz"; }
trap pack EXIT
if [ -d .whl ]; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
    && export PYTHONPATH=/tmp/site:$PWD
else
  export PYTHONPATH=$PWD
fi
export PYTHONUNBUFFERED=1
nvidia-smi > "$out/nvidia-smi.txt" 2>&1
python3 -c "import torch; print(torch.__version__, torch.cuda.get_device_name())" | tee "$out/env.txt"
case $stage in
  all)  # ~8 min, the first call of a lease: the CUDA tests (kernels vs the fp32 math path, the JVP, the CUDA-graph
        # JVP), the step profile (the JVP call eager vs CUDA graph, and vs torch.compile of torch.func.jvp for the
        # moving-digits model; FM / MeanFlow / MeanFlow with the graphed JVP at 1x and 4x batch; GPU busy share), and
        # the bench's bf16 rows with the graphed variant, merged into results/bench_cuda.json
    # (the compiled CPU variant of the graphed-JVP test is left to CI; test_train's run compiles the JVP on CUDA)
    timeout 120 python3 -m pytest -q -o addopts="" \
      -k "(gpu_ or finite_difference or forward_jvp or graphed or cuda_graph) and not compiled" \
      tests/test_model.py tests/test_method.py tests/test_train.py tests/test_jvp_rules.py 2>&1 | tee "$out/pytest_cuda.txt"
    timeout 220 python3 scripts/gpu/profile_step.py --compiled-jvp small --out "$out/profile_step.json" 2>&1 \
      | tee "$out/profile.txt"
    [ -f results/bench_cuda.json ] && cp results/bench_cuda.json "$out/bench_cuda.json"
    timeout 150 python3 scripts/bench.py --quick --only throughput --out "$out/bench_cuda.json" 2>&1 | tee "$out/bench.txt"
    ;;
  smoke)  # the user's path on CUDA (pipeline vs CPU, a short training run loaded back) and 2 processes through DDP
    timeout 150 python3 scripts/gpu/smoke.py --out "$out/smoke.json" --train-steps 60 2>&1 | tee "$out/smoke.txt"
    timeout 60 python3 scripts/gpu/ddp_check.py --out "$out/ddp.json" 2>&1 | tee "$out/ddp.txt"
    ;;
  profile)  # the bf16 step profile at 1x and 4x batch (GPU busy share, kernels, CUDA-graph replay and torch.compile
            # of the JVP call for every case)
    timeout 300 python3 scripts/gpu/profile_step.py --compiled-jvp all --out "$out/profile_step.json" 2>&1 \
      | tee "$out/profile.txt"
    ;;
  rest)  # after `all` in a lease with ~8 min left: the kernel tests, a bf16 step profile, the bench sections `all`
         # leaves out, merged into results/bench_cuda.json's figures (commit that file from `all` first)
    [ -f results/bench_cuda.json ] && cp results/bench_cuda.json "$out/bench_cuda.json"
    timeout 60 python3 -m pytest -q -o addopts="" -k "gpu_attention" tests/test_model.py 2>&1 | tee "$out/pytest_cuda.txt"
    timeout 120 python3 scripts/gpu/profile_step.py --out "$out/profile_step.json" 2>&1 | tee "$out/profile.txt"
    timeout 190 python3 scripts/bench.py --quick --only attention_long,clip_latency,attention,sampling,compile \
      --out "$out/bench_cuda.json" 2>&1 | tee "$out/bench.txt"
    ;;
  check)
    timeout 330 python3 -m pytest -q -o addopts="" -x tests/test_model.py tests/test_method.py tests/test_jvp_rules.py 2>&1 \
      | tee "$out/pytest_cuda.txt"
    timeout 180 python3 scripts/gpu/tangent_error.py --out "$out/tangent_error.json" 2>&1 | tee "$out/tangent.txt"
    ;;
  bench)
    timeout 520 python3 scripts/bench.py --out "$out/bench_cuda.json" 2>&1 | tee "$out/bench.txt"
    ;;
  train)  # TRAIN_SECONDS of training (1/3 image stage, 2/3 video stage) + ~30 s of starts and export; scored
           # afterwards on the CPU (scripts/evaluate_digits.py) unless EVAL=1
    budget=${TRAIN_SECONDS:-400}
    pred=${PREDICTION:-x}  # x-prediction: the best equal-budget arm on CPU (docs/bundled_model.md)
    tangent=${TANGENT:-model}  # improved MeanFlow's tangent: the better arm at equal steps on CPU (docs/experiments.md, session 28)
    common="model.prediction=$pred method.tangent=$tangent train.mixed_precision=bf16 train.cuda_graph_jvp=${GRAPH:-true} train.compile_jvp=${COMPILE:-false} train.checkpoint_every=200 train.num_workers=8 train.log_every=100"
    timeout $((budget / 3)) python3 -m mfvideo.cli.train configs/moving_digits_image.yaml train.output_dir=/tmp/gpu_image \
      train.batch_size=${IMAGE_BATCH:-1024} $common ${MODEL_ARGS:-} 2>&1 | tail -3 | tee "$out/train_image.txt"
    cp /tmp/gpu_image/log.jsonl "$out/train_image_log.jsonl"
    img=$(ls -d /tmp/gpu_image/checkpoints/step_* | tail -1)
    timeout $((budget * 2 / 3)) python3 -m mfvideo.cli.train configs/moving_digits.yaml train.output_dir=/tmp/gpu_video \
      model.init_from="$img" train.batch_size=${VIDEO_BATCH:-512} $common ${MODEL_ARGS:-} ${VIDEO_ARGS:-} 2>&1 | tail -3 \
      | tee "$out/train_video.txt"
    vid=$(ls -d /tmp/gpu_video/checkpoints/step_* | tail -1)
    python3 -m mfvideo.cli.export "$vid" --out "$out/moving_digits_gpu" && cp /tmp/gpu_video/log.jsonl "$out/train_video_log.jsonl"
    echo "img=$img vid=$vid tangent=$tangent MODEL_ARGS=${MODEL_ARGS:-} VIDEO_ARGS=${VIDEO_ARGS:-}" > "$out/video_args.txt"
    if [ "${POST_STEPS:-0}" -gt 0 ]; then  # the bundled recipe's stage 5 on the GPU-trained model (README "Bundled model")
      timeout ${POST_SECONDS:-90} python3 -m mfvideo.cli.post_train "$out/moving_digits_gpu" --out "$out/moving_digits_gpu_post" \
        --steps "$POST_STEPS" --device cuda 2>&1 | tail -3 | tee "$out/post_train.txt"
      rm -f "$out/moving_digits_gpu_post/post_train_state.pt"  # a stopped run's state (~60 MB): not worth the trip back
    fi
    if [ "${EVAL:-0}" = 1 ]; then
      timeout 120 python3 scripts/evaluate_digits.py --checkpoint "gpu=$out/moving_digits_gpu" --steps 1 --n 200 \
        --long-frames 16 --out "$out/digits_eval.json" 2>&1 | tail -12 | tee "$out/digits_eval.txt"
    fi
    ;;
  *) echo "unknown stage $stage: all, smoke, profile, rest, check, bench or train"; exit 2 ;;
esac
