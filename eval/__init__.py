"""Evaluation: SRCNN-release metrics (PSNR, SSIM), full-image inference, scoring of SR methods."""
