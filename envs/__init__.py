"""The CPU suite: SIMPLER's Google-robot tasks in MuJoCo (DESIGN.md §4), registered with gymnasium.

    import envs
    from eval.loop import play
    from policies.baselines import FunctionPolicy

    env = envs.make("google_robot_open_top_drawer", image_size=128)  # or "worldflow/GoogleRobotOpenTopDrawer-v0"
    row = play(env, "expert", seed=0, video_path="ep.mp4")  # the scripted expert; or any policy, e.g.
    row = play(env, FunctionPolicy(lambda obs, instruction: np.zeros(7)), seed=0)

Importing this package registers the gymnasium ids and loads neither MuJoCo nor any GL library; the first
`make` imports envs.suite, which chooses MuJoCo's GL backend (EGL, else OSMesa, unless MUJOCO_GL is set).
"""

from envs.plugin import EnvConfig, SimplerAPI, make_from_config
from envs.registry import TASK_GROUPS, TASKS, gym_id, make, register_all

register_all()


def prepare_rendering() -> None:
    """Create MuJoCo's GL context now; call before importing TensorFlow in a process that renders envs."""
    from envs.suite import prepare_rendering as prepare

    prepare()


__all__ = [
    "TASKS",
    "TASK_GROUPS",
    "EnvConfig",
    "SimplerAPI",
    "gym_id",
    "make",
    "make_from_config",
    "prepare_rendering",
]
