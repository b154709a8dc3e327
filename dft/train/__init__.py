"""Fine-tuning: pure torch training code, a DeepSpeed engine, and a Ray Train adapter."""
