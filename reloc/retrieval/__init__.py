"""Image retrieval: VLAD over the map's own local descriptors, top-k keyframes and their poses."""
