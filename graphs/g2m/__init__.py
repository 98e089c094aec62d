"""GNN-to-MLP distillation: GLNN (Zhang et al., ICLR 2022) and FF-G2M (Wu et al., AAAI 2024).

``teacher.train_teacher`` fits a GNN and exports the logits of all nodes; ``student.distill`` trains
the graph-free MLP with ``mlp | glnn | lfd | hfd | ff-g2m`` losses (``losses``); ``presets`` holds the
official per-dataset configurations; ``python -m graphs.g2m`` runs the pipeline end to end.
"""
