"""The reloc viewer app (Open3D GUI), started by ``reloc view``."""
