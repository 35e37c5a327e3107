"""Measuring a System: fidelity metrics, Frechet distance and KID, intervals and paired statistics,
latency and memory, equal information, the NFE rule."""
