"""Benchmarks of the running assistant (real services, real models). See bench/run.sh."""
