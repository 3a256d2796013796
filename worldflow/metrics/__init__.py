"""Quality metrics: PSNR/SSIM for video prediction (more in later modules: FD, FID, linear probe)."""
