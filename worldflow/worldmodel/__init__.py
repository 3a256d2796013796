"""The world model (DESIGN.md §2): one token sequence, per-token timesteps, modes chosen by which groups
are clean, noised or absent."""
