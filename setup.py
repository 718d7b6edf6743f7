"""cmat_jax: Collaborative Multi-Agent Tuning of small language models as database agents, in JAX."""

from setuptools import find_packages, setup

setup(
    name="cmat_jax",
    version="0.1.0",
    description="CMAT (Collaborative Multi-Agent Tuning) in JAX/Flax: LoRA tuning of Qwen/Llama "
    "models as SQL agents, with exact Hugging Face parity.",
    long_description=open("README.md", encoding="utf-8").read(),
    long_description_content_type="text/markdown",
    python_requires=">=3.11",
    packages=find_packages(include=["cmat_jax", "cmat_jax.*"]),
    package_data={"cmat_jax": ["assets/*", "assets/*/*"]},
    install_requires=[
        "jax>=0.7",
        "flax>=0.12",
        "optax>=0.2.5",
        "orbax-checkpoint>=0.11",
        "transformers>=4.50",
        "safetensors>=0.4",
        "gguf>=0.16",  # llama.cpp's GGUF reader and dequantizers (pure Python)
        "tensorflow-datasets>=4.9.7",
        "array_record>=0.7",
        "sqlglot>=26",
        "ml-collections>=1.0",
        "tensorboardX>=2.6",
        "jinja2",  # chat templates (transformers does not require it)
        "tqdm",
        "matplotlib>=3.8",  # the evaluation's ablation plot
        "numpy",
    ],
    extras_require={
        # torch is pinned so that a fresh machine resolves the local CPU build and
        # not the registry's newest build with gigabytes of CUDA packages.
        "test": ["torch==2.13.0", "peft>=0.15", "pytest>=8", "pytest-xdist>=3", "hypothesis>=6"],
    },
)
