def get_image_from_maniskill2_obs_dict(env, obs, camera_name=None):
    """As SimplerEnv's: the overhead camera's RGB for the Google robot."""
    if camera_name is None:
        if "google_robot" not in env.robot_uid:
            raise NotImplementedError(env.robot_uid)
        camera_name = "overhead_camera"
    return obs["image"][camera_name]["rgb"]
