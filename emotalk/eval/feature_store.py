"""A typed store for what the metrics measure on one evaluated video (landmarks, embeddings, sync scores).

Several metrics need the same expensive intermediate: M-LD and F-LVD both need the dlib landmarks of the
generated frames, FID-dlib and CSIM-dlib both need dlib face embeddings. Each :class:`VideoSample` owns a
:class:`FeatureStore`; a metric asks it for ``(side, feature, params)`` and computes the value only when it
is missing. Keys are enums, so a typo is an ``AttributeError`` rather than a silently separate cache entry,
and the side is a field of the key rather than part of a string -- which is what lets ``evaluate`` hand the
ground-truth measurements of one method to the next (:meth:`FeatureStore.subset`) and reuse them as the
*generated* side of the ground-truth row (:meth:`FeatureStore.relabelled`).

``params`` distinguishes variants of one feature (e.g. embeddings of every k-th frame); it must be
hashable.
"""
from __future__ import annotations

from enum import Enum
from typing import Any, Callable, Hashable, Iterable


class Side(str, Enum):
    """Which image(s) of a sample a feature was measured on."""

    GENERATED = "generated"
    GROUND_TRUTH = "ground_truth"
    IDENTITY = "identity"  # the identity photo the video was made from
    NEUTRAL_GENERATED = "neutral_generated"  # the same method's rendering of the same input, emotion neutral


class Feature(str, Enum):
    """What was measured."""

    LANDMARKS = "landmarks"  # (T, 68, 2) dlib landmarks, NaN rows where no face was found
    BOXES = "boxes"  # (T, 4) face boxes left/top/right/bottom
    DLIB_EMBEDDING = "dlib_embedding"  # (T', 128) dlib face-recognition embeddings
    SYNCNET = "syncnet"  # dict: SyncNet offset / LSE-C / LSE-D of the video against its audio
    AV_SYNC = "av_sync"  # dict: offline mouth-opening vs speech-energy sync


Key = tuple[Side, Feature, Hashable]


class FeatureStore:
    """``(side, feature, params) -> value`` for one sample; values are computed at most once."""

    def __init__(self, items: dict[Key, Any] | None = None):
        self._items: dict[Key, Any] = dict(items or {})

    @staticmethod
    def _key(side: Side, feature: Feature, params: Hashable) -> Key:
        if not isinstance(side, Side) or not isinstance(feature, Feature):
            raise TypeError(f"feature keys are (Side, Feature), got ({side!r}, {feature!r})")
        return (side, feature, params)

    def __contains__(self, key: tuple) -> bool:
        side, feature, *rest = key
        return self._key(side, feature, rest[0] if rest else None) in self._items

    def __len__(self) -> int:
        return len(self._items)

    def keys(self) -> list[Key]:
        return list(self._items)

    def get(self, side: Side, feature: Feature, params: Hashable = None, default: Any = None) -> Any:
        return self._items.get(self._key(side, feature, params), default)

    def put(self, side: Side, feature: Feature, value: Any, params: Hashable = None) -> Any:
        self._items[self._key(side, feature, params)] = value
        return value

    def get_or_compute(self, side: Side, feature: Feature, compute: Callable[[], Any],
                       params: Hashable = None) -> Any:
        key = self._key(side, feature, params)
        if key not in self._items:
            self._items[key] = compute()
        return self._items[key]

    def subset(self, sides: Iterable[Side]) -> "FeatureStore":
        """A new store with only the entries measured on ``sides`` (values shared, not copied)."""
        keep = set(sides)
        return FeatureStore({k: v for k, v in self._items.items() if k[0] in keep})

    def relabelled(self, source: Side, target: Side) -> "FeatureStore":
        """A new store holding ``source``'s entries under ``target``: for a video that *is* the source
        (the ground-truth row, whose generated frames are the ground-truth frames)."""
        return FeatureStore({(target, f, p): v for (s, f, p), v in self._items.items() if s == source})

    def update(self, other: "FeatureStore") -> None:
        self._items.update(other._items)

    def __repr__(self) -> str:
        return f"FeatureStore({', '.join(f'{s.value}/{f.value}' for s, f, _ in self._items)})"
