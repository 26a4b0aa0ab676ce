"""The scene model: a background plus 1–4 objects, their validity rules, and random placement.

A scene is plain data. Objects are kept in a canonical order (by ``y``, then ``x``) so that two scenes holding the
same objects compare equal however they were built; placement rules guarantee no two objects share a top-left corner.
Every random function takes a ``numpy.random.Generator``.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from functools import lru_cache

import numpy as np

from hyperbagel.world import palette as P
from hyperbagel.world.regions import REGIONS, region_centre, region_of


@dataclass(frozen=True)
class Obj:
    """One object: ``shape``, ``color``, ``size`` names and the integer top-left corner of its square box."""

    shape: str
    color: str
    size: str
    x: int
    y: int

    def side(self, resolution: int) -> int:
        return P.side(self.size, resolution)

    def box(self, resolution: int) -> tuple[int, int, int, int]:
        """``(x0, y0, x1, y1)``, half-open."""
        s = self.side(resolution)
        return (self.x, self.y, self.x + s, self.y + s)

    def centre(self, resolution: int) -> tuple[float, float]:
        s = self.side(resolution)
        return (self.x + s / 2, self.y + s / 2)

    def region(self, resolution: int) -> str:
        return region_of(*self.centre(resolution), resolution)


@dataclass(frozen=True)
class Scene:
    objects: tuple[Obj, ...]
    background: str = P.DEFAULT_BACKGROUND
    resolution: int = P.DEFAULT_RESOLUTION

    def __post_init__(self) -> None:
        ordered = tuple(sorted(self.objects, key=lambda o: (o.y, o.x, o.shape, o.color, o.size)))
        object.__setattr__(self, "objects", ordered)


# ---------------------------------------------------------------------------------------------------- validity


def boxes_clear(a: tuple[int, int, int, int], b: tuple[int, int, int, int], gap: int = P.GAP) -> bool:
    """Whether two half-open boxes are at least ``gap`` empty pixels apart along some axis."""
    return a[2] + gap <= b[0] or b[2] + gap <= a[0] or a[3] + gap <= b[1] or b[3] + gap <= a[1]


def problems(scene: Scene) -> list[str]:
    """Every way ``scene`` breaks the world's rules (empty when it is valid)."""
    found = []
    R = scene.resolution
    if R not in P.RESOLUTIONS:
        return [f"resolution {R} is not one of {P.RESOLUTIONS}"]
    if scene.background not in P.BACKGROUNDS:
        found.append(f"background {scene.background!r} is not one of {P.BACKGROUND_NAMES}")
    if not P.MIN_OBJECTS <= len(scene.objects) <= P.MAX_OBJECTS:
        found.append(f"{len(scene.objects)} objects (must be {P.MIN_OBJECTS}–{P.MAX_OBJECTS})")
    for i, o in enumerate(scene.objects):
        if o.shape not in P.SHAPES or o.color not in P.COLORS or o.size not in P.SIZES:
            found.append(f"object {i} has an unknown shape, colour or size: {o}")
            continue
        x0, y0, x1, y1 = o.box(R)
        if min(x0, y0) < P.MARGIN or max(x1, y1) > R - P.MARGIN:
            found.append(f"object {i} is not inside the canvas with a {P.MARGIN}-pixel margin")
    for i, a in enumerate(scene.objects):
        for j in range(i + 1, len(scene.objects)):
            b = scene.objects[j]
            if a.size in P.SIZES and b.size in P.SIZES and not boxes_clear(a.box(R), b.box(R)):
                found.append(f"objects {i} and {j} are closer than {P.GAP} px")
    return found


def is_valid(scene: Scene) -> bool:
    return not problems(scene)


# ---------------------------------------------------------------------------------------------------- placement


def free_spots(objects: tuple[Obj, ...] | list[Obj], side: int, resolution: int) -> np.ndarray:
    """Boolean ``[R, R]`` mask over top-left corners ``[y, x]`` where a box of ``side`` may go next to ``objects``."""
    R = resolution
    ok = np.zeros((R, R), dtype=bool)
    hi = R - P.MARGIN - side
    if hi < P.MARGIN:
        return ok
    ok[P.MARGIN : hi + 1, P.MARGIN : hi + 1] = True
    for o in objects:
        x0, y0, x1, y1 = o.box(R)
        # A corner (x, y) collides when x ∈ [x0 − side − GAP + 1, x1 + GAP − 1], and the same along y.
        ok[max(0, y0 - side - P.GAP + 1) : max(0, y1 + P.GAP), max(0, x0 - side - P.GAP + 1) : max(0, x1 + P.GAP)] = (
            False
        )
    return ok


@lru_cache(maxsize=64)
def region_mask(region: str, side: int, resolution: int) -> np.ndarray:
    """Boolean ``[R, R]`` mask over top-left corners whose box centre lies in ``region``."""
    coords = np.arange(resolution) + side / 2
    row = np.minimum(2, np.floor(3 * coords / resolution)).astype(int)
    index = REGIONS.index(region)
    mask = (row[:, None] == index // 3) & (row[None, :] == index % 3)
    mask.flags.writeable = False
    return mask


def nearest_spot(spots: np.ndarray, region: str, side: int, resolution: int) -> tuple[int, int] | None:
    """The free corner ``(x, y)`` in ``region`` whose box centre is nearest the region's centre (ties: smaller y, x).

    This is where the ``add`` and ``move`` edits put their object.
    """
    ys, xs = np.nonzero(spots & region_mask(region, side, resolution))
    if len(xs) == 0:
        return None
    cx, cy = region_centre(region, resolution)
    d2 = (xs + side / 2 - cx) ** 2 + (ys + side / 2 - cy) ** 2
    best = np.lexsort((xs, ys, d2))[0]
    return int(xs[best]), int(ys[best])


def place_objects(
    rng: np.random.Generator,
    specs: list[tuple[str, str, str]],
    resolution: int = P.DEFAULT_RESOLUTION,
    regions: list[str | None] | None = None,
    fixed: tuple[Obj, ...] = (),
    attempts: int = 50,
) -> tuple[Obj, ...] | None:
    """Random legal corners for ``(shape, color, size)`` specs beside the ``fixed`` objects, or None.

    Objects are placed one by one, each uniformly among the corners still legal (and, when ``regions`` names one,
    whose centre lies in that region) — the same distribution as rejecting uniform corners until one fits; a dead end
    restarts the placement, up to ``attempts`` times.
    """
    for _ in range(attempts):
        placed = list(fixed)
        for i, (shape, color, size) in enumerate(specs):
            s = P.side(size, resolution)
            spots = free_spots(placed, s, resolution)
            if regions is not None and regions[i] is not None:
                spots &= region_mask(regions[i], s, resolution)
            flat = np.flatnonzero(spots)
            if len(flat) == 0:
                break
            y, x = divmod(int(flat[rng.integers(len(flat))]), resolution)
            placed.append(Obj(shape, color, size, x, y))
        else:
            return tuple(placed[len(fixed) :])
    return None


def search_placement(
    rng: np.random.Generator,
    specs: list[tuple[str, str, str]],
    resolution: int = P.DEFAULT_RESOLUTION,
    regions: list[str | None] | None = None,
    budget: int = 20_000,
) -> tuple[Obj, ...] | None:
    """Like ``place_objects`` but by randomised depth-first search, so tight layouts are found when they exist
    (within ``budget`` tried corners); None when the search finds none."""
    tried = 0

    def extend(placed: list[Obj]) -> list[Obj] | None:
        nonlocal tried
        i = len(placed)
        if i == len(specs):
            return placed
        shape, color, size = specs[i]
        s = P.side(size, resolution)
        spots = free_spots(placed, s, resolution)
        if regions is not None and regions[i] is not None:
            spots &= region_mask(regions[i], s, resolution)
        flat = np.flatnonzero(spots)
        for k in rng.permutation(len(flat)):
            tried += 1
            if tried > budget:
                return None
            y, x = divmod(int(flat[k]), resolution)
            found = extend(placed + [Obj(shape, color, size, x, y)])
            if found is not None:
                return found
        return None

    found = extend([])
    return None if found is None else tuple(found)


def random_spec(rng: np.random.Generator, shapes: tuple[str, ...] = P.SHAPES) -> tuple[str, str, str]:
    return (
        shapes[rng.integers(len(shapes))],
        P.COLORS[rng.integers(len(P.COLORS))],
        P.SIZES[rng.integers(len(P.SIZES))],
    )


def sample_scene(
    rng: np.random.Generator,
    resolution: int = P.DEFAULT_RESOLUTION,
    n_objects: int | None = None,
    background: str = P.DEFAULT_BACKGROUND,
) -> Scene:
    """A uniformly random valid scene: 1–4 objects (uniform count unless given), each shape/colour/size uniform."""
    P.check_resolution(resolution)
    while True:
        n = int(rng.integers(P.MIN_OBJECTS, P.MAX_OBJECTS + 1)) if n_objects is None else n_objects
        objects = place_objects(rng, [random_spec(rng) for _ in range(n)], resolution)
        if objects is not None:
            return Scene(objects, background, resolution)


def scene_with(
    rng: np.random.Generator,
    specs: list[tuple[str, str, str]],
    resolution: int = P.DEFAULT_RESOLUTION,
    background: str = P.DEFAULT_BACKGROUND,
    regions: list[str | None] | None = None,
    attempts: int = 50,
) -> Scene | None:
    """A scene holding exactly the given objects at random legal places (or None when they do not fit)."""
    objects = place_objects(rng, specs, resolution, regions, attempts=attempts)
    return None if objects is None else Scene(objects, background, resolution)


def replace_object(scene: Scene, old: Obj, new: Obj | None) -> Scene:
    """``scene`` with ``old`` replaced by ``new`` (or removed when ``new`` is None)."""
    rest = list(scene.objects)
    rest.remove(old)
    return replace(scene, objects=tuple(rest + ([new] if new is not None else [])))


# ---------------------------------------------------------------------------------------------------- JSON


def scene_to_json(scene: Scene) -> dict:
    return {
        "resolution": scene.resolution,
        "background": scene.background,
        "objects": [{"shape": o.shape, "color": o.color, "size": o.size, "x": o.x, "y": o.y} for o in scene.objects],
    }


def scene_from_json(data: dict) -> Scene:
    objects = tuple(Obj(o["shape"], o["color"], o["size"], int(o["x"]), int(o["y"])) for o in data["objects"])
    return Scene(objects, data.get("background", P.DEFAULT_BACKGROUND), int(data.get("resolution", 64)))
