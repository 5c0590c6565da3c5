"""Model zoo for the robustness benchmark: small real models trained on CPU in seconds.

- `llama`      — tiny LLaMA-style LM with Hugging Face tensor names (functional + nn.Module).
- `text`       — word-level corpus from `pydoc_data.topics` (ships with Python; no download).
- `train`      — pretraining, full fine-tuning, peft LoRA-and-merge, and the on-disk cache.
- `classifier` — MLP on scikit-learn's bundled digits, with training and fine-tuning.

Submodules are imported explicitly (`from benchmarks.zoo.llama import ...`) so that using the
LM does not pull in peft or scikit-learn.
"""
