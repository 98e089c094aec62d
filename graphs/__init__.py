"""Graph distillation: Mirage (graph classification) and GNN-to-MLP distillation (GLNN, FF-G2M)."""
