"""Evaluation: Fréchet distances, FID/FVD from local TorchScript networks, and the moving-digits suite."""
