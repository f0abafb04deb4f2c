"""ONNX export of a trained student: world-space rays in, colours out, the whole path in one graph.

The graph (:class:`RayGraph`) takes the rays a camera casts in the scene's world frame (as
:func:`r2l.geometry.rays.get_rays` builds them) and does everything :meth:`Student.render_rays
<r2l.models.students.Student.render_rays>` does after :func:`r2l.models.render.pose_rays`: the NDC map of a
forward-facing scene, the deterministic (evaluation) points along each ray (contracted in an unbounded scene),
the features and the network.
The grid student's trilinear and bilinear lookups are written as gathers and weights
(:class:`GatherGridStudent`, the same function as ``grid_sample`` with zero padding), so the graph needs no
GridSample: every op it uses runs in onnxruntime's CPU and WebAssembly backends.

Names it fixes: :data:`EXPORT_FORMAT` (the layout of an exported file), :data:`OPSET`, the input names
:data:`INPUTS` (``rays_o``, ``rays_d``: ``(n_rays, 3)`` float32 each, n_rays dynamic) and :data:`OUTPUT`
(``rgb``: ``(n_rays, 3)`` float32 in [0, 1]), and the metadata keys :data:`METADATA_KEYS` (every value JSON
text; :func:`read_metadata` reads them back).
"""

from __future__ import annotations

import contextlib
import importlib.util
import json
import logging
import warnings
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from r2l.core.atomic import atomic_write
from r2l.core.errors import DataError, R2LError
from r2l.geometry.rays import ndc_rays
from r2l.models.gridstudent import OUTSIDE_LOGIT, PLANE_PAIRS, GridStudentNet, _grid_coords
from r2l.models.students import Student

EXPORT_FORMAT = 1  # bump when the inputs, outputs or metadata of an exported file change meaning
OPSET = 20  # the ONNX opset of the graph (torch's exporter's own; onnxruntime >= 1.17, onnxruntime-web too)
INPUTS = ("rays_o", "rays_d")
OUTPUT = "rgb"
CAMERA_CONVENTION = ("OpenGL camera-to-world (x right, y up, looking down -z); pixel centres at +0.5, principal "
                     "point at the image centre; ray directions not normalised (camera-space z = -1); world-space "
                     "rays in, the NDC map (when ndc) inside the graph")
METADATA_KEYS = ("r2l_export_format", "r2l_version", "opset", "inputs", "outputs", "ray_space", "camera_convention",
                 "family", "kind", "near", "far", "ndc", "ndc_near", "unbounded", "sample_split", "scene_name",
                 "scene_format", "H", "W", "focal", "background", "render_poses", "step", "val_psnr", "weights")
EXPORT_PACKAGES = "pip install 'r2l[export]' (onnx, onnxscript, onnxruntime)"
SAMPLE_RAYS = 64  # rays in the example input the graph is traced with (any count >= 2; n_rays stays dynamic)


def _cell(x: torch.Tensor, size: int, pad: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The grid cell of grid_sample coordinates along one axis of ``size`` nodes (``align_corners=True``).

    x: (...) coordinates ([-1, 1] spans the nodes). pad: 1 for a table with a zero node before and after the
    grid (points outside read zeros, as ``grid_sample``'s zero padding); 0 for none (then only points inside
    the grid read the right value). Returns the table index of the cell's lower node (...) and the weights of
    its lower and upper node (...), computed as ``grid_sample`` does.
    """
    ix = (x + 1.0) / 2.0 * (size - 1)
    if pad:
        ix = ix.clamp(-1.0, float(size))  # beyond one node outside: a weight of 1 on a zero node
    i0 = torch.floor(ix).clamp(-pad, size - 2 + pad)
    return (i0 + pad).long(), (i0 + 1.0) - ix, ix - i0


def corner_rows(table: torch.Tensor, offsets: list[int]) -> torch.Tensor:
    """table: (N, ...) -> (N, len(offsets), ...): row i holds rows ``i + offsets`` of ``table`` (zeros past its
    end). In the graph it depends on weights only: onnxruntime computes it once, when it loads the file, and the
    file stores just ``table``; each lookup is then one gather of rows."""
    full = torch.cat([table, table.new_zeros(max(offsets), *table.shape[1:])])
    return torch.stack([full[o : o + table.shape[0]] for o in offsets], dim=1)


def corner_weights(axes: list[tuple[torch.Tensor, torch.Tensor]]) -> torch.Tensor:
    """The weights of a cell's corners: ``axes`` holds (w0, w1), each (...), per axis, x first. Returns
    (..., 2^len(axes)), x varying fastest, each the product of its axes' weights in ``grid_sample``'s order."""
    weights = list(axes[0])
    for w0, w1 in axes[1:]:
        weights = [w * wa for wa in (w0, w1) for w in weights]
    return torch.stack(weights, dim=-1)  # built from (...) tensors: no broadcast over a tiny last axis


def trilinear(table: torch.Tensor, size: tuple[int, int, int], gx: torch.Tensor, gy: torch.Tensor,
              gz: torch.Tensor) -> torch.Tensor:
    """``F.grid_sample(grid[None, None], g, align_corners=True)`` as one gather, for points inside the grid.

    table: (D * H * W,) the grid's values, row-major; size: (D, H, W); gx, gy, gz: (...) coordinates in [-1, 1]
    along W, H and D. Returns (...) trilinear values (finite nonsense for points outside).
    """
    D, H, W = size
    ix, *wx = _cell(gx, W, 0)
    iy, *wy = _cell(gy, H, 0)
    iz, *wz = _cell(gz, D, 0)
    offsets = [z * H * W + y * W + x for z in (0, 1) for y in (0, 1) for x in (0, 1)]
    rows = corner_rows(table, offsets).index_select(0, ((iz * H + iy) * W + ix).reshape(-1))  # (n, 8)
    w = corner_weights([wx, wy, wz])
    return (rows.reshape(w.shape) * w).sum(dim=-1)


def bilinear(table: torch.Tensor, size: tuple[int, int], x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """``F.grid_sample`` of P planes (C, H, W) each (``align_corners=True``, zero padding) as one gather.

    table: (C, P * (H + 2) * (W + 2)) the planes one after the other, each with a border of zeros
    (:func:`plane_table`); size: (H, W); x, y: (P, m) coordinates in plane p ([-1, 1] spans it) along W and H.
    Returns (C, P, m): channels first, so that the corner weights broadcast over a leading axis and the sum runs
    over the last one (both fast in onnxruntime).
    """
    H, W = size
    ix, *wx = _cell(x, W, 1)
    iy, *wy = _cell(y, H, 1)
    first = torch.arange(x.shape[0])[:, None] * ((H + 2) * (W + 2))  # each plane's first node (P, 1)
    rows = corner_rows(table.t(), [0, 1, W + 2, W + 3]).permute(2, 0, 1)  # (C, nodes, 4); never past a plane
    values = rows.index_select(1, (first + iy * (W + 2) + ix).reshape(-1))  # (C, P * m, 4)
    w = corner_weights([wx, wy]).reshape(-1, 4)
    return (values * w).sum(dim=-1).reshape(table.shape[0], *x.shape)


def plane_table(plane: torch.Tensor) -> torch.Tensor:
    """plane: (C, H, W) -> its :func:`bilinear` table (C, (H + 2) * (W + 2)): a border of zeros, row-major."""
    return F.pad(plane.detach(), (1, 1, 1, 1)).reshape(plane.shape[0], -1).contiguous()


class GatherGridStudent(GridStudentNet):
    """A grid student whose lookups are gathers (export only): the same function as the network it copies.

    Its grids are stored as gather tables: ``geometry_table`` (G^3,) and, per level, ``plane_table_{level}``
    (C, 3 (R + 2)^2) (:func:`plane_table` of its three planes, one after the other).
    """

    def __init__(self, net: GridStudentNet):
        with torch.random.fork_rng(devices=[]):  # the random initial planes, overwritten next, draw from no one's RNG
            super().__init__(net.cfg, net.box, net.space)
        self.load_state_dict(net.state_dict())
        self.register_buffer("geometry_table", self.geometry.detach().reshape(-1).clone())
        self.geometry_size = tuple(self.geometry.shape[2:])
        for level, planes in enumerate(self.planes):
            self.register_buffer(f"plane_table_{level}", torch.cat([plane_table(p) for p in planes], dim=1))
        self.plane_sizes = [tuple(planes.shape[-2:]) for planes in self.planes]
        self.geometry, self.planes = None, nn.ParameterList()  # read through the tables only: one copy in the graph

    def point_logits(self, rays_o: torch.Tensor, rays_d: torch.Tensor, t: torch.Tensor, hit: torch.Tensor | None,
                     tiles: None) -> torch.Tensor:
        """Logits (n, p) of the points at ray coordinates ``t: (n, p)`` along rays_o, rays_d: (n, 3), outside the box
        per ray from ``hit: (n,)`` or per point (:meth:`GridStudentNet.point_logits`; read from the gather table,
        so there are no ``tiles``)."""
        g = self.space.grid_coords(rays_o, rays_d, t, self.box)
        if hit is not None:  # the span is inside the box: clamp as the network's border padding does
            g, inside = [c.clamp(-1.0, 1.0) for c in g], hit[:, None]
        else:
            inside = (g[0].abs() <= 1.0) & (g[1].abs() <= 1.0) & (g[2].abs() <= 1.0)
        logit = trilinear(self.geometry_table, self.geometry_size, *g)  # per axis: no broadcast over (n, p, 3)
        return torch.where(inside, logit, torch.full_like(logit, OUTSIDE_LOGIT))

    def geometry_tiles(self) -> None:
        """No tiles: the logit grid is read from its gather table (:meth:`point_logits`)."""
        return None

    def features(self, pts: torch.Tensor) -> torch.Tensor:
        """Tri-plane product features (:meth:`GridStudentNet.features`). pts: (m, 3). Returns (m, C x levels)."""
        g = _grid_coords(pts, self.box)
        x, y = (torch.stack([g[:, pair[i]] for pair in PLANE_PAIRS]) for i in (0, 1))  # (3, m) each
        levels = []
        for level, size in enumerate(self.plane_sizes):
            f = bilinear(getattr(self, f"plane_table_{level}"), size, x, y)  # (C, 3, m): the level's three planes
            levels.append(f[:, 0] * f[:, 1] * f[:, 2])
        return torch.cat(levels, dim=0).t()


class RayGraph(nn.Module):
    """What the exported graph computes: world-space rays -> colours of a student's network.

    net: the family's network (eval mode); near, far: its render-space sampling range; ndc: ``(H, W, focal,
    ndc_near)`` of the scene camera for a forward-facing scene (its rays go through NDC first), or None.
    """

    def __init__(self, net: nn.Module, near: float, far: float, ndc: tuple[int, int, float, float] | None):
        super().__init__()
        self.net = GatherGridStudent(net) if isinstance(net, GridStudentNet) else net
        self.near, self.far, self.ndc = float(near), float(far), ndc
        self.eval()

    def forward(self, rays_o: torch.Tensor, rays_d: torch.Tensor) -> torch.Tensor:
        """rays_o, rays_d: (n_rays, 3) world-space rays. Returns rgb: (n_rays, 3) in [0, 1]."""
        if self.ndc is not None:
            H, W, focal, ndc_near = self.ndc
            rays_o, rays_d = ndc_rays(H, W, focal, ndc_near, rays_o, rays_d)
        return self.net(rays_o, rays_d, self.near, self.far, False)


def student_camera(student: Student, path: Path) -> dict:
    """The scene identity and camera a student file stores (:func:`r2l.models.load.model_camera`); DataError
    naming ``path`` when it has none."""
    from r2l.models.load import model_camera  # (load imports the student families, as this module does)

    camera = model_camera(student)
    if camera is None:
        raise DataError(path, "the file stores no scene camera (a format-0 student file): retrain it to export it")
    return camera


def ray_graph(student: Student, camera: dict) -> RayGraph:
    """The :class:`RayGraph` of a loaded student (on the CPU, float32) with its stored ``camera``."""
    ndc = None
    if student.meta["ndc"]:
        ndc = (int(camera["H"]), int(camera["W"]), float(camera["focal"]), float(camera.get("ndc_near", 1.0)))
    return RayGraph(student.model.float().cpu(), student.near, student.far, ndc)


@contextlib.contextmanager
def _quiet_exporter():
    """Silence torch's ONNX exporter and its optimiser (onnxscript logs each rewrite at INFO, torch warns of
    optional packages and deprecations): no log record below ERROR and no warning while it runs."""
    disabled = logging.root.manager.disable
    logging.disable(max(disabled, logging.WARNING))
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        logging.disable(disabled)


def require(*modules: str) -> None:
    """R2LError naming the first of ``modules`` that is not installed, and how to install them."""
    missing = [name for name in modules if importlib.util.find_spec(name) is None]
    if missing:
        raise R2LError(f"ONNX export needs {missing[0]}: {EXPORT_PACKAGES}")


def export_graph(graph: RayGraph):
    """The ONNX ModelProto of ``graph`` (torch's dynamo exporter at :data:`OPSET`, n_rays dynamic)."""
    require("onnx", "onnxscript")  # (torch's exporter needs both: named here, before it fails deep inside)
    n_rays = torch.export.Dim("n_rays")
    sample = (torch.zeros(SAMPLE_RAYS, 3), torch.full((SAMPLE_RAYS, 3), -1.0))
    with _quiet_exporter(), torch.no_grad():
        program = torch.onnx.export(graph, sample, None, input_names=list(INPUTS), output_names=[OUTPUT],
                                    opset_version=OPSET, dynamic_shapes=({0: n_rays}, {0: n_rays}), dynamo=True,
                                    verbose=False)
    return program.model_proto


def metadata(student: Student, camera: dict, version: str, fp16: bool) -> dict:
    """The metadata written into an exported file: :data:`METADATA_KEYS` -> value (JSON-ready); fp16: whether
    its weights are stored as float16."""
    meta = student.meta
    values = {
        "r2l_export_format": EXPORT_FORMAT, "r2l_version": version, "opset": OPSET, "inputs": list(INPUTS),
        "outputs": [OUTPUT], "ray_space": "world", "camera_convention": CAMERA_CONVENTION,
        "family": meta["family"], "kind": meta["kind"], "near": student.near, "far": student.far,
        "ndc": bool(meta["ndc"]), "ndc_near": float(camera.get("ndc_near", 1.0)),
        "unbounded": bool(camera.get("unbounded", False)), "sample_split": camera.get("sample_split"),
        "scene_name": camera.get("name"), "scene_format": camera.get("format"), "H": int(camera["H"]),
        "W": int(camera["W"]), "focal": float(camera["focal"]), "background": camera.get("background"),
        "render_poses": camera.get("render_poses") or [], "step": meta["step"], "val_psnr": meta["val_psnr"],
        "weights": "float16" if fp16 else "float32",
    }
    return {key: values[key] for key in METADATA_KEYS}


def set_metadata(proto, values: dict) -> None:
    """Write ``values`` (key -> JSON-ready value) into ``proto.metadata_props``, each value as JSON text."""
    del proto.metadata_props[:]
    for key, value in values.items():
        entry = proto.metadata_props.add()
        entry.key, entry.value = key, json.dumps(value)


def read_metadata(path: str | Path) -> dict:
    """An exported file's metadata (key -> value, each decoded from its JSON text); DataError for a file that is
    not an ONNX model."""
    require("onnx")
    import onnx

    try:
        proto = onnx.load(str(path), load_external_data=False)
    except (OSError, ValueError) as err:  # (protobuf's DecodeError is a ValueError)
        raise DataError(path, f"not a readable ONNX file ({type(err).__name__})") from err
    return {p.key: json.loads(p.value) for p in proto.metadata_props}


def strip_debug_info(proto) -> None:
    """Drop what torch's exporter records per node for debugging (the Python stack and module of each op): most
    of the bytes of a small model's file, nothing that runs."""
    for node in proto.graph.node:
        del node.metadata_props[:]
        node.doc_string = ""
    for value in (*proto.graph.value_info, *proto.graph.input, *proto.graph.output):
        del value.metadata_props[:]


def half_weights(proto, min_size: int = 16) -> None:
    """Store the float32 initializers of ``proto`` with at least ``min_size`` values as float16, each read back
    through a Cast to float32 (the arithmetic stays float32; the file shrinks to about half)."""
    import numpy as np
    import onnx
    from onnx import numpy_helper

    casts = []
    for init in proto.graph.initializer:
        if init.data_type != onnx.TensorProto.FLOAT or int(np.prod(init.dims)) < min_size:
            continue
        values = numpy_helper.to_array(init)
        name = init.name
        init.CopyFrom(numpy_helper.from_array(values.astype(np.float16), name + "_fp16"))
        casts.append(onnx.helper.make_node("Cast", [name + "_fp16"], [name], to=onnx.TensorProto.FLOAT))
    nodes = casts + list(proto.graph.node)
    del proto.graph.node[:]
    proto.graph.node.extend(nodes)


def export_student(student: Student, path: Path, out: str | Path, version: str, fp16: bool = False) -> Path:
    """Export a loaded student (read from ``path``) to the ONNX file ``out`` (written atomically); returns it.

    fp16: store the weights as float16 (:func:`half_weights`).
    """
    require("onnx", "onnxscript")
    import onnx

    camera = student_camera(student, path)
    proto = export_graph(ray_graph(student, camera))
    strip_debug_info(proto)
    set_metadata(proto, metadata(student, camera, version, fp16))
    if fp16:
        half_weights(proto)
    onnx.checker.check_model(proto)
    return atomic_write(out, lambda tmp: onnx.save(proto, str(tmp)), suffix=".onnx")
