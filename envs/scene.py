"""MJCF scenes of the CPU suite, written here from primitives (nothing downloaded).

Frames. The robot **base frame is the world frame**: origin on the floor under the robot, x forward (towards
the table or cabinet), y to the robot's left, z up. Actions and proprioception are expressed in it.

Two layouts, as SIMPLER uses different scenes for table-top and cabinet tasks:
  table    a table whose top is at TABLE_Z, objects in front of the robot (coke can, move near)
  cabinet  a three-drawer cabinet whose front face is at CABINET_FRONT_X, drawers on slide joints (qpos in
           metres, 0 = closed, positive = pulled towards the robot, travel DRAWER_TRAVEL), a horizontal bar
           handle on stand-offs in front of each drawer, an apple on top (drawer and drawer + apple tasks)

The gripper is a free body welded to a mocap body (as Meta-World drives its Sawyer): the controller moves the
mocap target, the weld pulls the hand along, and contacts with fixed geometry stop the hand instead of
tunnelling through it. Two fingers slide along the hand's y axis under position actuators. The hand frame's
origin is the tool centre point (TCP) between the fingertips; with the identity orientation the gripper
points down (-z) and the fingers close along y.

Rendering speed (DESIGN.md §4 "Rendering speed trap"): by default no shadows, no multisampling, and an
offscreen buffer exactly the image size; `pretty=True` turns shadows and 4x multisampling on for videos.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from envs.geometry import look_at_xyaxes

PHYSICS_DT = 0.002  # s; 166 substeps per 3 Hz action (SIMPLER: 513 Hz, 171 substeps)
TABLE_Z = 0.75  # table top height (m)
TABLE_X = (0.30, 1.00)  # table top extent along x (m)
CABINET_FRONT_X = 0.62  # front face of the closed drawers (m)
CABINET_TOP_Z = 0.86  # cabinet top surface (m)
DRAWER_ROWS = {"top": 0.775, "middle": 0.645, "bottom": 0.515}  # drawer (and handle bar) centre heights
DRAWER_TRAVEL = 0.25  # m; SIMPLER's thresholds (0.15 open, 0.05 closed, 0.2 start) apply in metres
HANDLE_OFFSET = 0.06  # handle bar centre in front of the drawer face (m)
HANDLE_HALF_LENGTH = 0.10
FINGER_TRAVEL = 0.045  # each finger's slide range (m); closedness = finger qpos / FINGER_TRAVEL
FINGER_OPEN_HALF_WIDTH = 0.05  # inner finger face at |y| = 0.05 - qpos


@dataclass(frozen=True)
class ObjectSpec:
    """A graspable object: its label in instructions, MJCF geoms, resting half-height and xy half-diagonal."""

    label: str
    geoms: str
    half_height: float  # standing upright on the table
    half_diagonal: float  # of its xy bounding box (move near's "near" threshold, as SIMPLER)


_FRICTION = 'friction="1.2 0.01 0.0002" condim="4"'
# cans get rolling friction (condim 6): a lying cylinder is neutrally stable and would otherwise creep away
_CAN = (
    '<geom name="{n}" type="cylinder" size="0.033 0.061" mass="0.12" rgba="{c}" '
    'friction="1.2 0.01 0.002" condim="6"/>'
)
_CAN_BAND = '<geom type="cylinder" size="0.0335 0.012" pos="0 0 0.02" rgba="0.95 0.95 0.95 1" contype="0" conaffinity="0" mass="0"/>'

OBJECTS: dict[str, ObjectSpec] = {
    "coke_can": ObjectSpec(
        "coke can", _CAN.format(n="coke_can", c="0.75 0.05 0.05 1") + _CAN_BAND, 0.061, 0.047
    ),
    "green_can": ObjectSpec(
        "green can", _CAN.format(n="green_can", c="0.1 0.6 0.2 1") + _CAN_BAND, 0.061, 0.047
    ),
    "orange": ObjectSpec(
        "orange",
        '<geom name="orange" type="ellipsoid" size="0.036 0.036 0.033" mass="0.1" rgba="1 0.5 0.05 1" '
        + _FRICTION
        + "/>",
        0.033,
        0.051,
    ),
    "sponge": ObjectSpec(
        "sponge",
        '<geom name="sponge" type="box" size="0.045 0.03 0.02" mass="0.05" rgba="0.95 0.85 0.2 1" '
        + _FRICTION
        + '/><geom type="box" size="0.0452 0.0302 0.006" pos="0 0 0.016" rgba="0.2 0.6 0.25 1" '
        'contype="0" conaffinity="0" mass="0"/>',
        0.02,
        0.054,
    ),
    "apple": ObjectSpec(
        "apple",
        '<geom name="apple" type="ellipsoid" size="0.035 0.035 0.032" mass="0.1" rgba="0.72 0.12 0.1 1" '
        + _FRICTION
        + '/><geom type="capsule" size="0.003 0.008" pos="0 0 0.036" rgba="0.35 0.2 0.1 1" '
        'contype="0" conaffinity="0" mass="0"/>',
        0.032,
        0.049,
    ),
}

CAMERA_TARGETS = {"table": (0.56, 0.0, TABLE_Z), "cabinet": (0.55, 0.0, 0.66)}
CAMERA_POS = (0.12, 0.0, 1.32)  # the head camera: above and behind the gripper, looking down and ahead
CAMERA_FOVY = 62.0  # deg; SIMPLER's head camera: 512 px high, fy = 425 -> 2 atan(256/425)
N_DISTRACTORS = 3


def _gripper_xml() -> str:
    finger = (
        '<body name="finger_{side}"><joint name="finger_{side}" type="slide" axis="0 {ax} 0" '
        'range="0 {travel}" damping="10" armature="0.01"/>'
        '<geom name="finger_{side}" type="box" size="0.01 0.006 0.045" pos="0 {y} 0.03" mass="0.05" '
        'rgba="0.75 0.75 0.78 1" friction="1.5 0.02 0.0005" condim="4"/></body>'
    )
    y = FINGER_OPEN_HALF_WIDTH + 0.006  # finger boxes: 9 cm long, tips 1.5 cm below the TCP
    return f"""
    <body name="mocap" mocap="true" pos="0.45 0 1.0"/>
    <body name="hand" pos="0.45 0 1.0" gravcomp="1">
      <freejoint name="hand"/>
      <site name="tcp" size="0.004" rgba="1 0 0 0" group="3"/>
      <geom name="palm" type="box" size="0.015 0.07 0.015" pos="0 0 0.09" mass="0.5" rgba="0.2 0.2 0.22 1"/>
      <geom name="wrist" type="cylinder" size="0.022 0.03" pos="0 0 0.135" mass="0.2" rgba="0.3 0.3 0.33 1"
            contype="0" conaffinity="0"/>
      {finger.format(side="left", ax=-1, y=y, travel=FINGER_TRAVEL)}
      {finger.format(side="right", ax=1, y=-y, travel=FINGER_TRAVEL)}
    </body>"""


def _table_xml() -> str:
    x0, x1 = TABLE_X
    cx, hx = (x0 + x1) / 2, (x1 - x0) / 2
    legs = "".join(
        f'<geom type="box" size="0.025 0.025 {TABLE_Z / 2 - 0.01}" pos="{x} {y} {TABLE_Z / 2 - 0.01}" '
        'rgba="0.35 0.25 0.18 1" contype="0" conaffinity="0"/>'
        for x in (x0 + 0.05, x1 - 0.05)
        for y in (-0.55, 0.55)
    )
    return (
        f'<geom name="table" type="box" size="{hx} 0.6 0.02" pos="{cx} 0 {TABLE_Z - 0.02}" '
        f'rgba="0.62 0.5 0.38 1" friction="1 0.01 0.0002"/>{legs}'
    )


def _drawer_xml(row: str, z: float) -> str:
    # Local frame: origin on the closed drawer's front face at the row's centre height; the slide joint's
    # axis is -x, so qpos > 0 pulls the drawer towards the robot.
    face = "0.55 0.42 0.3 1"
    return f"""
    <body name="drawer_{row}" pos="{CABINET_FRONT_X} 0 {z}">
      <joint name="drawer_{row}" type="slide" axis="-1 0 0" range="0 {DRAWER_TRAVEL}" damping="8"
             frictionloss="0.3" armature="0.2"/>
      <geom name="drawer_{row}_front" type="box" size="0.01 0.21 0.06" pos="0.01 0 0" mass="0.4" rgba="{face}"/>
      <geom name="drawer_{row}_bottom" type="box" size="0.15 0.19 0.005" pos="0.17 0 -0.05" mass="0.3"
            rgba="0.8 0.72 0.6 1"/>
      <geom name="drawer_{row}_left" type="box" size="0.15 0.005 0.035" pos="0.17 0.195 -0.015" mass="0.1"
            rgba="0.8 0.72 0.6 1"/>
      <geom name="drawer_{row}_right" type="box" size="0.15 0.005 0.035" pos="0.17 -0.195 -0.015" mass="0.1"
            rgba="0.8 0.72 0.6 1"/>
      <geom name="drawer_{row}_back" type="box" size="0.005 0.19 0.035" pos="0.315 0 -0.015" mass="0.1"
            rgba="0.8 0.72 0.6 1"/>
      <geom name="handle_{row}" type="capsule" size="0.01 {HANDLE_HALF_LENGTH}" pos="{-HANDLE_OFFSET} 0 0"
            euler="1.5708 0 0" mass="0.05" rgba="0.8 0.8 0.85 1"/>
      <geom type="box" size="{HANDLE_OFFSET / 2} 0.006 0.006" pos="{-HANDLE_OFFSET / 2} 0.09 0" mass="0.01"
            rgba="0.8 0.8 0.85 1"/>
      <geom type="box" size="{HANDLE_OFFSET / 2} 0.006 0.006" pos="{-HANDLE_OFFSET / 2} -0.09 0" mass="0.01"
            rgba="0.8 0.8 0.85 1"/>
    </body>"""


def _cabinet_xml() -> str:
    x0, depth = CABINET_FRONT_X, 0.36
    cx, bottom = x0 + depth / 2, min(DRAWER_ROWS.values()) - 0.065
    wall = 'rgba="0.5 0.38 0.27 1"'
    separators = "".join(
        f'<geom type="box" size="{depth / 2} 0.21 0.003" pos="{cx} 0 {z + 0.065}" {wall}/>'
        for z in (DRAWER_ROWS["bottom"], DRAWER_ROWS["middle"])
    )
    body = f"""
    <body name="cabinet">
      <geom name="cabinet_top" type="box" size="{depth / 2} 0.23 0.01" pos="{cx} 0 {CABINET_TOP_Z - 0.01}" {wall}/>
      <geom type="box" size="{depth / 2} 0.01 {(CABINET_TOP_Z - bottom) / 2}"
            pos="{cx} 0.22 {(CABINET_TOP_Z + bottom) / 2}" {wall}/>
      <geom type="box" size="{depth / 2} 0.01 {(CABINET_TOP_Z - bottom) / 2}"
            pos="{cx} -0.22 {(CABINET_TOP_Z + bottom) / 2}" {wall}/>
      <geom type="box" size="0.01 0.23 {(CABINET_TOP_Z - bottom) / 2}"
            pos="{x0 + depth} 0 {(CABINET_TOP_Z + bottom) / 2}" {wall}/>
      <geom type="box" size="{depth / 2} 0.23 {bottom / 2}" pos="{cx} 0 {bottom / 2}" {wall}/>
      {separators}
    </body>"""
    drawers = "".join(_drawer_xml(row, z) for row, z in DRAWER_ROWS.items())
    return body + drawers


def _distractors_xml() -> str:
    # Visual-only (no collisions, no mass on a joint): they change the picture, never the task's physics.
    shapes = [
        'type="box" size="0.03 0.03 0.03"',
        'type="sphere" size="0.03"',
        'type="cylinder" size="0.025 0.04"',
    ]
    return "".join(
        f'<body name="distractor_{i}" pos="0 0 -1"><geom name="distractor_{i}" {shapes[i % 3]} '
        'rgba="0.5 0.5 0.5 1" contype="0" conaffinity="0"/></body>'
        for i in range(N_DISTRACTORS)
    )


def scene_xml(
    layout: str,
    objects: list[str],
    image_size: tuple[int, int],
    pretty: bool = False,
    distractors: bool = False,
) -> str:
    """The MJCF string of a scene: `layout` is "table" or "cabinet"; `objects` are keys of OBJECTS, each a
    free body (tasks place them on reset); `image_size` is (H, W)."""
    height, width = image_size
    quality = (
        '<quality shadowsize="2048" offsamples="4"/>'
        if pretty
        else '<quality shadowsize="0" offsamples="0"/>'
    )
    xyaxes = " ".join(
        f"{v:.6f}" for v in look_at_xyaxes(np.array(CAMERA_POS), np.array(CAMERA_TARGETS[layout]))
    )
    bodies = "".join(
        f'<body name="{name}" pos="{2 + i} 2 0.1"><freejoint name="{name}"/>{OBJECTS[name].geoms}</body>'
        for i, name in enumerate(objects)
    )
    furniture = _table_xml() if layout == "table" else _cabinet_xml()
    excludes = '<exclude body1="finger_left" body2="finger_right"/>' + (
        "".join(f'<exclude body1="cabinet" body2="drawer_{row}"/>' for row in DRAWER_ROWS)
        if layout == "cabinet"
        else ""
    )
    return f"""
<mujoco model="worldflow_{layout}">
  <compiler angle="radian" autolimits="true"/>
  <option timestep="{PHYSICS_DT}" integrator="implicitfast" cone="elliptic" impratio="5"/>
  <visual>
    {quality}
    <global offwidth="{width}" offheight="{height}"/>
    <headlight ambient="0.35 0.35 0.35" diffuse="0.4 0.4 0.4" specular="0.05 0.05 0.05"/>
  </visual>
  <asset>
    <texture name="sky" type="skybox" builtin="gradient" rgb1="0.75 0.78 0.82" rgb2="0.45 0.47 0.5" width="32" height="32"/>
  </asset>
  <worldbody>
    <geom name="floor" type="plane" size="3 3 0.1" rgba="0.42 0.43 0.45 1"/>
    <light name="sun" pos="0.4 0.3 2.2" dir="0.1 -0.1 -1" diffuse="0.55 0.55 0.55" castshadow="{str(pretty).lower()}"/>
    <camera name="head" pos="{CAMERA_POS[0]} {CAMERA_POS[1]} {CAMERA_POS[2]}" xyaxes="{xyaxes}" fovy="{CAMERA_FOVY}"/>
    {furniture}
    {bodies}
    {_distractors_xml() if distractors else ""}
    {_gripper_xml()}
  </worldbody>
  <equality><weld body1="mocap" body2="hand" solref="0.01 1"/></equality>
  <contact>{excludes}</contact>
  <actuator>
    <position name="finger_left" joint="finger_left" kp="300" ctrlrange="0 {FINGER_TRAVEL}" forcerange="-25 25"/>
    <position name="finger_right" joint="finger_right" kp="300" ctrlrange="0 {FINGER_TRAVEL}" forcerange="-25 25"/>
  </actuator>
</mujoco>"""
