"""A run folder saved by an earlier version (the flat ``model.backbone`` layout) still loads, into the
same model as the current layout."""
import dataclasses
import json
import shutil

import torch

from mambadiff.models.layer_options import FLAT_OPTIONS, LAYER_KINDS
from mambadiff.tasks.seq2seq import load_seq2seq_model


def _flat_backbone(backbone: dict) -> dict:
    """The current layout written back as earlier versions saved it: the section of ``name`` spread into
    the flat keys (the others at their old defaults), S4's l_max in max_len, no sections."""
    old = {k: v for k, v in backbone.items() if k not in LAYER_KINDS}
    old.update(d_state=16, d_conv=4, expand=2, headdim=32, chunk_size=64, s4d_init="lin", h3_head_dim=8,
               h3_shift_size=4, scan_backend="auto")
    section = backbone[backbone["name"]]
    for key, readers in FLAT_OPTIONS.items():
        if backbone["name"] in readers:
            old[key] = section[readers[backbone["name"]]]
    if backbone["name"] == "s4":
        old["max_len"] = section["l_max"]
    return old


def test_a_run_folder_of_the_flat_layout_loads_into_the_same_model(tiny_run, tmp_path):
    old_run = tmp_path / "old"
    shutil.copytree(tiny_run, old_run)
    for path in old_run.rglob("config.json"):
        saved = json.loads(path.read_text())
        saved["model"]["backbone"] = _flat_backbone(saved["model"]["backbone"])
        path.write_text(json.dumps(saved))
    assert "d_state" in json.loads((old_run / "config.json").read_text())["model"]["backbone"]
    new_model, _, new_cfg = load_seq2seq_model(tiny_run)
    old_model, _, old_cfg = load_seq2seq_model(old_run)
    old_bb, new_bb = old_cfg.model.backbone, new_cfg.model.backbone
    assert old_bb.layer_config() == new_bb.layer_config()  # the other kinds' sections built nothing
    assert _flat_backbone(dataclasses.asdict(old_bb)) == _flat_backbone(dataclasses.asdict(new_bb))
    assert dataclasses.replace(old_cfg.model, backbone=new_bb) == new_cfg.model
    old_state, new_state = old_model.state_dict(), new_model.state_dict()
    assert list(old_state) == list(new_state)
    assert all(torch.equal(old_state[k], new_state[k]) for k in old_state)
    g = torch.Generator().manual_seed(0)
    x_t = torch.randn(2, 9, new_cfg.model.emb_dim, generator=g)  # (b, l, e)
    t = torch.tensor([3, 70])
    mask = torch.arange(9)[None] < torch.tensor([9, 5])[:, None]  # (b, l)
    with torch.no_grad():
        assert torch.equal(old_model(x_t, t, mask), new_model(x_t, t, mask))
