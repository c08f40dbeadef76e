"""Networks only: StyleGAN2, e4e, IR-SE50, latent mappers and their shared ops."""
