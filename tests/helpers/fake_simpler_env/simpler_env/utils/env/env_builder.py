def build_maniskill2_env(env_name, **kwargs):
    """As SimplerEnv's: gym.make(env_name, **kwargs), the overlay on the overhead camera by default."""
    from simpler_env import BaseEnv

    if kwargs.get("rgb_overlay_path") is not None and kwargs.get("rgb_overlay_cameras") is None:
        kwargs["rgb_overlay_cameras"] = ["overhead_camera"]
    return BaseEnv(env_name, **kwargs)
