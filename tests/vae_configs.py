"""Tiny random configs of the real diffusers VAE classes (same code paths as the released weights)."""

import torch

TINY = {
    "image_vae": ("AutoencoderKL", dict(
        block_out_channels=(8, 8), down_block_types=("DownEncoderBlock2D",) * 2,
        up_block_types=("UpDecoderBlock2D",) * 2, latent_channels=4, norm_num_groups=4, layers_per_block=1)),
    "dc_ae": ("AutoencoderDC", dict(  # Sana's deep-compression autoencoder: 8x here (32x released), deterministic
        in_channels=3, latent_channels=4, attention_head_dim=4, encoder_block_types=("ResBlock",) * 3,
        decoder_block_types=("ResBlock",) * 3, encoder_block_out_channels=(8, 8, 8),
        decoder_block_out_channels=(8, 8, 8), encoder_layers_per_block=(1, 1, 1), decoder_layers_per_block=(1, 1, 1),
        encoder_qkv_multiscales=((),) * 3, decoder_qkv_multiscales=((),) * 3, scaling_factor=0.41407)),
    "wan": ("AutoencoderKLWan", dict(base_dim=4, z_dim=4, dim_mult=[1, 1, 1, 1], num_res_blocks=1,
                                     temperal_downsample=[False, True, True],
                                     latents_mean=[0.1, -0.2, 0.3, 0.0], latents_std=[1.5, 0.5, 2.0, 1.0])),
    "cogvideox": ("AutoencoderKLCogVideoX", dict(
        block_out_channels=(8, 8, 8, 8), latent_channels=4, layers_per_block=1, norm_num_groups=4,
        temporal_compression_ratio=4)),
    "hunyuan": ("AutoencoderKLHunyuanVideo", dict(
        block_out_channels=(8, 8, 8, 8), latent_channels=4, layers_per_block=1, norm_num_groups=4,
        spatial_compression_ratio=8, temporal_compression_ratio=4)),
    "ltx": ("AutoencoderKLLTXVideo", dict(
        block_out_channels=(8, 8, 8, 8), decoder_block_out_channels=(8, 8, 8, 8), latent_channels=8,
        layers_per_block=(1, 1, 1, 1, 1), decoder_layers_per_block=(1, 1, 1, 1, 1),
        spatio_temporal_scaling=(True, True, True, False), decoder_spatio_temporal_scaling=(True, True, True, False),
        decoder_inject_noise=(False,) * 5, upsample_residual=(False,) * 4, upsample_factor=(1,) * 4)),
}


def tiny_vae(kind, seed=0):
    import diffusers

    name, kw = TINY[kind]
    torch.manual_seed(seed)
    return getattr(diffusers, name)(**kw).eval()
