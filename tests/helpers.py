"""Small helpers shared by several test files (imported as `helpers`; pytest puts tests/ on sys.path)."""

from __future__ import annotations

import textwrap

HEAVY = ("tensorflow", "tf_keras", "keras", "matplotlib")


def import_blocker(block_expr: str = repr(HEAVY)) -> str:
    """Python source to put at the top of a subprocess script: the top-level packages named by the
    expression `block_expr` (evaluated in that script, e.g. from sys.argv) become unimportable."""
    return textwrap.dedent(f"""
        import sys
        BLOCK = {block_expr}

        class _Blocker:
            def find_spec(self, name, path=None, target=None):
                if name.split(".")[0] in BLOCK:
                    raise ImportError("blocked for this test: " + name)

        sys.meta_path.insert(0, _Blocker())
    """)


def tiny_train_config(sample_root, out, split_csv, **overrides):
    """A TrainConfig for quick tests: alpha 0.35, 96 px, no pretrained weights, the shipped samples."""
    from wbc_edge.model import ModelConfig
    from wbc_edge.train import TrainConfig

    base = dict(data_root=str(sample_root), out_dir=str(out), split_manifest=str(split_csv),
                model=ModelConfig(alpha=0.35, input_size=96, weights="none"),
                head_epochs=2, finetune_epochs=2, aug_views=1, batch_size=8)
    base.update(overrides)
    return TrainConfig(**base)
