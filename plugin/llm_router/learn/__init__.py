"""Training and inference pieces of the learned router (numpy only at run time)."""
