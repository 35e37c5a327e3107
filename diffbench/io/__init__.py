"""What is read and written: safetensors checkpoints and the training state they carry, MNIST, and
the typed configs of runs."""
