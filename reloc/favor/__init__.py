"""FaVoR (Polizzi et al., WACV 2025): one small voxel descriptor field per persistent landmark,
rendered from any camera centre, trained on the dense-descriptor patches of its observations."""
