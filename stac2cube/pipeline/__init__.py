"""Run the pipeline: search, then for each scene read → harmonise → steps → COGs → STAC item.

Each scene is an independent unit whose output is one STAC item; a scene that fails is recorded
in the catalog's failure log and the run goes on; a re-run processes only what is missing,
failed or stale. One module per part: :mod:`.run` (orchestration), :mod:`.plan`, :mod:`.task`,
:mod:`.read`, :mod:`.blocks`, :mod:`.blocksteps`, :mod:`.candidates`, :mod:`.twins`,
:mod:`.steps`, :mod:`.executors`, :mod:`.commit`, :mod:`.summary`; see docs/architecture.md.
"""

from .executors import dask_client, execute, slurm_cluster, slurm_job_script
from .plan import needs_processing, replaced_versions
from .read import read_aux, read_scene
from .run import run
from .steps import active_steps, prepared_steps, temporal_test_after_coreg
from .summary import ProgressCallback, ProgressEvent, RunSummary, SceneOutcome, Status
from .task import SceneResult, SceneTask, process_scene
from .twins import find_l1c_twins, l1c_access_probe, l1c_env, mgrs_tile

__all__ = [
    "ProgressCallback",
    "ProgressEvent",
    "RunSummary",
    "SceneOutcome",
    "SceneResult",
    "SceneTask",
    "Status",
    "active_steps",
    "dask_client",
    "execute",
    "find_l1c_twins",
    "l1c_access_probe",
    "l1c_env",
    "mgrs_tile",
    "needs_processing",
    "prepared_steps",
    "process_scene",
    "read_aux",
    "read_scene",
    "replaced_versions",
    "run",
    "slurm_cluster",
    "slurm_job_script",
    "temporal_test_after_coreg",
]
