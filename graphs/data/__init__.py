"""Graph data layer: TU / OGB / Planetoid loaders with a local root, OGB node sets, GLNN's CPF files and user
graphs for node classification (``ogbn``, ``cpf``, ``files`` on the shared ``node_graph`` core), CSBM and motif generators."""
