"""Face editing: alignment, inversion, synthesis and the StyleCLIP editing methods."""
