"""ASR engine providers. Import the concrete module you need: each pulls its own heavy deps."""
