"""Named tasks: their label set, prompt text, sampling rate for the model, and split loaders."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Sequence

from edge_tslm.data.sample import Sample, TaskSpec


@dataclass(frozen=True)
class Task:
    spec: TaskSpec
    load: Callable[[str, str | None], Sequence[Sample]]  # (split, data path) -> samples
    fs: float = 0.0  # model rate (0: as recorded)
    max_seconds: float = 0.0
    series_features: str = ""  # measured numbers in each series' description (TSLMConfig.series_features)
    question_first: bool = False  # TSLMConfig.question_first
    series_text: str = "full"  # TSLMConfig.series_text


def _har(split: str, path: str | None) -> Sequence[Sample]:
    from edge_tslm.data.hapt import hapt_windows, read_uci_har

    if path and split in ("train", "test") and _is_uci_har(path):
        return read_uci_har(path, split)
    return hapt_windows(split, path)


def _har_gait(split: str, path: str | None) -> Sequence[Sample]:
    from edge_tslm.data.hapt import hapt_gait_windows

    if path and _is_uci_har(path):
        raise ValueError(
            f"{path} is a UCI HAR folder of pre-cut windows; a har_gait model needs whole recordings to find each "
            "wearer's gait frame: pass a HAPT source (the HAPT folder with RawData/, or the HAPT pickle)"
        )
    return hapt_gait_windows(split, path)


def _is_uci_har(path: str) -> bool:
    from pathlib import Path

    p = Path(path)
    return (p / "train" / "Inertial Signals").exists() or (p / "test" / "Inertial Signals").exists()


def _ecg(split: str, path: str | None) -> Sequence[Sample]:
    from edge_tslm.data.physionet2017 import Physionet2017, list_records

    if split == "all":
        return [r.sample() for r in list_records(path)]
    return Physionet2017(split, path)


def _tsqa(split: str, path: str | None) -> Sequence[Sample]:
    from edge_tslm.data.synthetic import tsqa_samples

    n, seed = {"train": (4000, 0), "val": (200, 1), "test": (400, 2)}[split]
    return tsqa_samples(n, seed=seed)


def _synthetic_ecg(split: str, path: str | None) -> Sequence[Sample]:
    from edge_tslm.data.synthetic import synthetic_ecg_samples

    n, seed = {"train": (2000, 0), "val": (100, 1), "test": (300, 2)}[split]
    return synthetic_ecg_samples(n, seed=seed)


def get_task(name: str) -> Task:
    from edge_tslm.data.hapt import HAR_GAIT_TASK, HAR_TASK
    from edge_tslm.data.physionet2017 import ECG_TASK
    from edge_tslm.data.synthetic import SYNTH_ECG_TASK, TSQA_TASKS

    tasks = {
        "har": Task(HAR_TASK, _har),
        # the same windows in each wearer's gait frame (edge_tslm.gait_frame): a stream calibrates it by walking
        "har_gait": Task(HAR_GAIT_TASK, _har_gait),
        # 150 Hz keeps R peaks sharp and halves the encoder's work; 60 s covers every challenge record
        # the measured heart rate and RR irregularity go into the description (the feature baseline's strongest
        # inputs; "beats" adds the beat shape, which helped SoftPrompt but not Flamingo, training/README.md); the
        # question comes first, so a stream's runtime caches it instead of paying for it every window
        "ecg_rhythm": Task(ECG_TASK, _ecg, fs=150.0, max_seconds=60.0, series_features="rr", question_first=True),
        "tsqa": Task(TSQA_TASKS["trend"], _tsqa),
        "synthetic_ecg": Task(SYNTH_ECG_TASK, _synthetic_ecg, fs=150.0, max_seconds=60.0),
    }
    # a model's config records its task spec's name ("ecg_rhythm_synthetic" for the synthetic_ecg stage)
    aliases = {t.spec.name: stage for stage, t in tasks.items() if t.spec.name not in tasks}
    name = aliases.get(name, name)
    if name not in tasks:
        raise ValueError(f"unknown task {name!r}; choose one of {sorted(tasks)}")
    return tasks[name]
