"""Compute kernels: a PyTorch reference for every op, faster versions selected in `dispatch`."""
