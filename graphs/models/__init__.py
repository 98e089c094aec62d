"""GNN zoo on PyG layers (graph- and node-level) and the MLP student."""
