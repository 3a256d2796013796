"""SIMPLER's official episode grids for the Google-robot tasks, as named episode sets.

SIMPLER's published numbers do not reset by seed: its scripts (SimplerEnv's scripts/rt1_*_visual_matching.sh
and rt1_*_variant_agg.sh, run through simpler_env/main_inference.py) build each env with explicit keywords
(scene, overlay image, URDF version, lighting, ...) and reset it on a grid of robot and object start poses.
`episodes(task, name)` lists those episodes for one of our task names; a task's success rate over its list is
the number SIMPLER reports for it (e.g. pick coke can: its three orientations, averaged with equal counts).

Plain Python: eval/worker.py imports it in SimplerEnv's venv, the harness in this one.
"""

from __future__ import annotations

import math

EPISODE_SETS = ("visual_matching", "variant_aggregation")
GOOGLE_ROBOT = {  # what main_inference.py passes every Google-robot env
    "obs_mode": "rgbd",
    "robot": "google_robot_static",
    "control_mode": "arm_pd_ee_delta_pose_align_interpolate_by_planner_gripper_pd_joint_target_delta_pos_interpolate_by_planner",
    "control_freq": 3,
    "sim_freq": 513,
    "camera_cfgs": {"add_segmentation": True},
}
# the visual-matching URDFs (the robot recoloured to match the real images); None: the original
URDF_VERSIONS = [None, "recolor_tabletop_visual_matching_1", "recolor_tabletop_visual_matching_2",
                 "recolor_cabinet_visual_matching_1"]  # fmt: skip
COKE_OPTIONS = {
    "horizontal": {"lr_switch": True},
    "vertical": {"laid_vertically": True},
    "standing": {"upright": True},
}
DRAWER_ENVS = {
    verb: {level: f"{verb.capitalize()}{level.capitalize()}DrawerCustomInScene-v0" for level in ("top", "middle", "bottom")}
    for verb in ("open", "close")
}  # fmt: skip
# drawer visual matching: robot x, y, yaw per overlay image (the real camera's nine start poses)
DRAWER_OVERLAYS = {
    "a0": (0.644, -0.179, -0.03), "a1": (0.765, -0.182, -0.02), "a2": (0.889, -0.203, -0.06),
    "b0": (0.652, 0.009, 0.0), "b1": (0.752, 0.009, 0.0), "b2": (0.851, 0.035, 0.0),
    "c0": (0.665, 0.224, 0.0), "c1": (0.765, 0.222, -0.025), "c2": (0.865, 0.222, -0.025),
}  # fmt: skip
DRAWER_VM_BUILD = {"shader_dir": "rt", "station_name": "mk_station_recolor", "light_mode": "simple",
                   "disable_bad_material": True}  # fmt: skip
# variant aggregation of the drawer scenes: the simulated apartment and its variants
DRAWER_VA_BUILDS = [
    {"scene_name": "frl_apartment_stage_simple", "shader_dir": "rt"},
    {"scene_name": "modern_bedroom_no_roof", "shader_dir": "rt"},
    {"scene_name": "modern_office_no_roof", "shader_dir": "rt"},
    {"scene_name": "frl_apartment_stage_simple", "shader_dir": "rt", "light_mode": "brighter"},
    {"scene_name": "frl_apartment_stage_simple", "shader_dir": "rt", "light_mode": "darker"},
    {"scene_name": "frl_apartment_stage_simple", "shader_dir": "rt", "station_name": "mk_station2"},
    {"scene_name": "frl_apartment_stage_simple", "shader_dir": "rt", "station_name": "mk_station3"},
]
TABLE = "google_pick_coke_can_1_v4"
# variant aggregation of the table scenes: (env id suffix, scene, extra keywords); shared by coke can and
# move near, which adds no_distractor and uses its own env ids
TABLE_VARIANTS = [
    ("", TABLE, {}),
    ("", "Baked_sc1_staging_objaverse_cabinet1_h870", {}),
    ("", "Baked_sc1_staging_objaverse_cabinet2_h870", {}),
    ("", "google_pick_coke_can_1_v4_alt_background", {}),
    ("", "google_pick_coke_can_1_v4_alt_background_2", {}),
    ("", TABLE, {"slightly_darker_lighting": True}),
    ("", TABLE, {"slightly_brighter_lighting": True}),
    ("AltGoogleCamera", TABLE, {}),
    ("AltGoogleCamera2", TABLE, {}),
]


def linspace(low: float, high: float, n: int) -> list[float]:
    """numpy.linspace as SimplerEnv's parse_range_tuple uses it."""
    return [low] if n == 1 else [low + (high - low) * i / (n - 1) for i in range(n)]


def robot_quat(yaw: float) -> list[float]:
    """The robot's start orientation (w, x, y, z): a yaw about z, then SimplerEnv's centre (0, 0, 0, 1), i.e.
    Pose(q=euler2quat(0, 0, yaw)) * Pose(q=[0, 0, 0, 1]) as in simpler_env/evaluation/argparse.py."""
    return [-math.sin(yaw / 2), 0.0, 0.0, math.cos(yaw / 2)]


def _episode(env_id, build, max_steps, robot_xy, yaw, obj) -> dict:
    """obj: (x, y) of the object, or an int: the env's own episode id (move near's object triplets)."""
    obj_options = {"episode_id": obj} if isinstance(obj, int) else {"init_xy": list(obj)}
    return {
        "env_id": env_id,
        "kwargs": {**GOOGLE_ROBOT, "max_episode_steps": max_steps, **build},
        "options": {
            "robot_init_options": {"init_xy": list(robot_xy), "init_rot_quat": robot_quat(yaw)},
            "obj_init_options": obj_options,
        },
    }


def _coke(option: dict, name: str) -> list[dict]:
    objects = [(x, y) for x in linspace(-0.35, -0.12, 5) for y in linspace(-0.02, 0.42, 5)]
    if name == "visual_matching":
        builds = [("GraspSingleOpenedCokeCanInScene-v0",
                   {"scene_name": TABLE, "rgb_overlay_path": "real_inpainting/google_coke_can_real_eval_1.png",
                    "urdf_version": urdf, **option}) for urdf in URDF_VERSIONS]  # fmt: skip
    else:
        builds = [(f"GraspSingleOpenedCokeCan{camera}InScene-v0", {"scene_name": scene, **extra, **option})
                  for camera, scene, extra in TABLE_VARIANTS]  # fmt: skip
        distractor = "GraspSingleOpenedCokeCanDistractorInScene-v0"
        builds[1:1] = [(distractor, {"scene_name": TABLE, **option}),
                       (distractor, {"scene_name": TABLE, "distractor_config": "more", **option})]  # fmt: skip
    return [_episode(env, build, 80, (0.35, 0.20), 0.0, obj) for env, build in builds for obj in objects]


def _move_near(name: str) -> list[dict]:
    if name == "visual_matching":
        builds = [("MoveNearGoogleBakedTexInScene-v0",
                   {"scene_name": TABLE, "rgb_overlay_path": "real_inpainting/google_move_near_real_eval_1.png",
                    "urdf_version": urdf}) for urdf in URDF_VERSIONS]  # fmt: skip
    else:
        builds = [(f"MoveNear{camera or 'Google'}InScene-v0", {"scene_name": scene, **extra})
                  for camera, scene, extra in TABLE_VARIANTS]  # fmt: skip
        builds.insert(1, ("MoveNearGoogleInScene-v0", {"scene_name": TABLE, "no_distractor": True}))
    return [_episode(env, build, 80, (0.35, 0.21), -0.09, k) for env, build in builds for k in range(60)]


def _drawer(
    env_ids,
    name,
    max_steps=113,
    extra=None,
    objects=((0, 0),),
    images=DRAWER_OVERLAYS,
    robot_xs=(0.65, 0.85, 3),
):
    extra = extra or {}
    if name == "visual_matching":
        return [
            _episode(env, {**DRAWER_VM_BUILD, "scene_name": "dummy_drawer", "urdf_version": urdf,
                           "rgb_overlay_path": f"real_inpainting/open_drawer_{image}.png", **extra},
                     max_steps, DRAWER_OVERLAYS[image][:2], DRAWER_OVERLAYS[image][2], obj)
            for urdf in URDF_VERSIONS for env in env_ids for image in images for obj in objects
        ]  # fmt: skip
    return [
        _episode(env, {**build, **extra}, max_steps, (x, y), 0.0, obj)
        for build in DRAWER_VA_BUILDS for env in env_ids for x in linspace(*robot_xs)
        for y in linspace(-0.2, 0.2, 3) for obj in objects
    ]  # fmt: skip


def _apple(name: str) -> list[dict]:
    """Visual matching: three of the drawer's overlay images; variant aggregation: the robot's x fixed."""
    apple = {"model_ids": "baked_apple_v2" if name == "visual_matching" else "apple"}
    objects = [(x, y) for x in linspace(-0.08, -0.02, 3) for y in linspace(-0.02, 0.08, 3)]
    env = ["PlaceIntoClosedTopDrawerCustomInScene-v0"]
    return _drawer(env, name, 200, apple, objects, images=("a0", "b0", "c0"), robot_xs=(0.65, 0.65, 1))


def episodes(task: str, name: str) -> list[dict]:
    """SIMPLER's episodes of `task` (our task name) in episode set `name`: dicts with env_id, kwargs (for
    gym.make; rgb_overlay_path relative to ManiSkill2_real2sim's data folder) and options (for reset)."""
    if name not in EPISODE_SETS:
        raise ValueError(f"unknown episode set {name!r}; use one of {list(EPISODE_SETS)} or a number")
    kind = task.removeprefix("google_robot_")
    if kind == "pick_coke_can":
        return [e for option in COKE_OPTIONS.values() for e in _coke(option, name)]
    for orientation, option in COKE_OPTIONS.items():
        if kind == f"pick_{orientation}_coke_can":
            return _coke(option, name)
    if kind == "move_near":
        return _move_near(name)
    for verb, levels in DRAWER_ENVS.items():
        if kind == f"{verb}_drawer":
            return _drawer(list(levels.values()), name)
        for level, env_id in levels.items():
            if kind == f"{verb}_{level}_drawer":
                return _drawer([env_id], name)
    if kind == "place_apple_in_closed_top_drawer":
        return _apple(name)
    raise ValueError(f"no SIMPLER episode grid for task {task!r}")
