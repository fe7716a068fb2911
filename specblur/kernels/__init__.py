"""Blur kernels: ``cpu`` (Numba, parallel over tiles of frames) and ``gpu`` (Numba CUDA)."""
