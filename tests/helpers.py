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
    from wbc_edge.model.network import ModelConfig
    from wbc_edge.train import TrainConfig

    base = dict(data_root=str(sample_root), out_dir=str(out), split_manifest=str(split_csv),
                model=ModelConfig(alpha=0.35, input_size=96, weights="none"),
                head_epochs=2, finetune_epochs=2, aug_views=1, batch_size=8)
    base.update(overrides)
    return TrainConfig(**base)


def without_metadata(data: bytes) -> bytes:
    """The same model without its TFLITE_METADATA entry (and buffer), contract zip kept: what a file
    exported before the metadata existed looks like (the shipped files now carry it)."""
    import flatbuffers

    from wbc_edge.export.metadata_schema import METADATA_FIELD_NAME, aligned_buffer_class, model_schema, unpack_model

    schema = model_schema()
    from wbc_edge.core.contract import strip_contract

    flat = strip_contract(data)
    model = unpack_model(schema, flat, "test")
    keep = []
    for m in model.metadata or []:
        name = m.name.decode() if isinstance(m.name, bytes) else m.name
        if name == METADATA_FIELD_NAME:
            assert m.buffer == len(model.buffers) - 1, "the metadata buffer is the last one"
            model.buffers = model.buffers[:-1]
        else:
            keep.append(m)
    model.metadata = keep or None
    aligned = aligned_buffer_class(schema)
    model.buffers = [aligned(data=b.data, offset=b.offset, size=b.size) for b in model.buffers]
    b = flatbuffers.Builder(len(flat) + 4096)
    b.Finish(model.Pack(b), b"TFL3")
    return bytes(b.Output()) + data[len(flat):]
