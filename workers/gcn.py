"""3-layer GCN over object graphs -> graph embedding, and its shipped weights.

``ObjectGCN``: class embedding (learned, 80 x 16) concatenated with the 16 node features, three
``GCNConv`` layers (edge-weighted, self-loops, symmetric normalisation) with ReLU, mean + max
pooling, a linear projection, L2 normalisation. Eval mode has no randomness.

``GraphEncoder`` loads ``workers/assets/gcn.safetensors`` lazily (tensors: the model state and the
80x80 co-occurrence ``prior``; metadata: the architecture), checks its sha256 against
``gcn.json`` (written by ``dupstream train`` with the seed and data recipe), and embeds batches of
``Objects``: one GCN forward per batch. An image without objects gets the zero vector.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Sequence
from importlib import resources
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from dupstream.core.errors import ModelError, WeightsError
from dupstream.workers.coco import NUM_CLASSES
from dupstream.workers.graph import NODE_DIM, ObjectGraph, build_graph
from dupstream.workers.semantic import Objects
from dupstream.workers.weights import WeightsDescriptor

GCN_FILE = "gcn.safetensors"
GCN_META = "gcn.json"


class ObjectGCN(nn.Module):
    def __init__(self, *, class_dim: int = 16, hidden: int = 64, out_dim: int = 64) -> None:
        super().__init__()
        from torch_geometric.nn import GCNConv

        self.config = {"class_dim": class_dim, "hidden": hidden, "out_dim": out_dim}
        self.classes = nn.Embedding(NUM_CLASSES, class_dim)
        self.convs = nn.ModuleList([
            GCNConv(class_dim + NODE_DIM, hidden),
            GCNConv(hidden, hidden),
            GCNConv(hidden, hidden),
        ])
        self.head = nn.Linear(2 * hidden, out_dim)
        self.out_dim = out_dim

    def forward(self, batch) -> torch.Tensor:
        from torch_geometric.nn import global_max_pool, global_mean_pool

        h = torch.cat([self.classes(batch.labels), batch.x], dim=1)
        for conv in self.convs:
            h = F.relu(conv(h, batch.edge_index, batch.edge_weight))
        pooled = torch.cat([global_mean_pool(h, batch.batch, batch.num_graphs),
                            global_max_pool(h, batch.batch, batch.num_graphs)], dim=1)
        return F.normalize(self.head(pooled), dim=1)


def to_batch(graphs: Sequence[ObjectGraph], device: torch.device | str = "cpu"):
    """A torch-geometric ``Batch`` of non-empty graphs."""
    from torch_geometric.data import Batch, Data

    data = [
        Data(
            x=torch.from_numpy(g.x),
            labels=torch.from_numpy(g.labels),
            edge_index=torch.from_numpy(g.edge_index),
            edge_weight=torch.from_numpy(g.edge_weight),
            num_nodes=g.num_nodes,
        )
        for g in graphs
    ]
    return Batch.from_data_list(data).to(device)


def save_gcn(model: ObjectGCN, prior: np.ndarray, path: str | Path) -> str:
    """Write the model + prior as safetensors; returns the file's sha256."""
    from safetensors.torch import save_file

    from dupstream.workers.weights import sha256_file

    tensors = {f"model.{k}": v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    tensors["prior"] = torch.from_numpy(np.ascontiguousarray(prior, np.float32))
    save_file(tensors, str(path), metadata={"config": json.dumps(model.config, sort_keys=True)})
    return sha256_file(path)


def default_assets() -> Path:
    return Path(str(resources.files("dupstream.workers") / "assets"))


class GraphEncoder:
    """Objects -> graph embeddings with the shipped (or a given) GCN."""

    name = "gcn"

    def __init__(
        self,
        *,
        weights_path: str | Path | None = None,
        meta_path: str | Path | None = None,
        device: str | None = None,
    ) -> None:
        assets = default_assets()
        self.weights_path = Path(weights_path) if weights_path else assets / GCN_FILE
        self.meta_path = Path(meta_path) if meta_path else self.weights_path.with_name(GCN_META)
        self._device = device
        self._model: ObjectGCN | None = None
        self._lock = threading.Lock()

    def load(self) -> ObjectGCN:
        with self._lock:
            if self._model is None:
                from safetensors import safe_open

                try:
                    meta = json.loads(self.meta_path.read_text())
                except (OSError, ValueError) as exc:
                    raise WeightsError(f"GCN metadata {self.meta_path} unreadable: {exc}") from exc
                self.meta = meta
                self.descriptor = WeightsDescriptor(
                    name="dupstream-gcn",
                    source=f"dupstream train (seed {meta.get('seed')}); {self.weights_path.name}",
                    sha256=meta.get("sha256"),
                    preprocessing="top-K objects -> workers.graph.build_graph",
                    license="Apache-2.0 (this project)",
                )
                path = self.descriptor.verify(self.weights_path)
                with safe_open(str(path), framework="pt") as f:
                    config = json.loads(f.metadata()["config"])
                    tensors = {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118
                model = ObjectGCN(**config)
                state = {k[len("model."):]: v for k, v in tensors.items()
                         if k.startswith("model.")}
                model.load_state_dict(state)
                self.device = torch.device(self._device or "cpu")
                self._model = model.eval().to(self.device)
                self.prior = tensors["prior"].numpy()
                self.graph_kwargs = dict(meta.get("graph", {}))
        return self._model

    @property
    def dim(self) -> int:
        return self.load().out_dim

    def graph(self, objects: Objects) -> ObjectGraph:
        self.load()
        return build_graph(objects, self.prior, **self.graph_kwargs)

    def embed(self, objects: Sequence[Objects]) -> np.ndarray:
        """``[B, dim]`` float32: unit vectors, zeros for images without objects."""
        model = self.load()
        out = np.zeros((len(objects), model.out_dim), np.float32)
        idx = [i for i, o in enumerate(objects) if len(o) > 0]
        if idx:
            try:
                batch = to_batch([self.graph(objects[i]) for i in idx], self.device)
                with torch.inference_mode():
                    out[idx] = model(batch).float().cpu().numpy()
            except (RuntimeError, ValueError, IndexError) as exc:
                raise ModelError(f"{self.name} inference failed: {exc}") from exc
        return out
