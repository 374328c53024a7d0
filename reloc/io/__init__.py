"""What reloc reads and writes on disk: the map folder and results files."""
