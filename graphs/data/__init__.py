"""Graph data layer: TU / OGB / Planetoid loaders with a local root, CSBM and motif generators."""
