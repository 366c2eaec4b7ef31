"""The engine: the only package that imports the Docker SDK. Everything else calls these
functions and gets layerkit's own errors (`errors.py`); see each module for its part."""

from layerkit.engine.client import (
    DEFAULT_HOST,
    DockerClient,
    EngineInfo,
    connect,
    engine_errors,
    engine_info,
)
from layerkit.engine.containers import (
    Container,
    ContainerInfo,
    ContainerSpec,
    NetworkInfo,
    PortBinding,
    VolumeInfo,
    create_container,
    create_network,
    exec_in,
    get_file,
    inspect_container,
    kill_container,
    labelled_containers,
    labelled_networks,
    labelled_volumes,
    put_files,
    remove_container,
    remove_network,
    remove_volume,
    start_container,
    stop_container,
)
from layerkit.engine.images import (
    find_image,
    inspect_image,
    load_image,
    pull_image,
    remove_image,
    split_ref,
    tag_image,
)
from layerkit.engine.save import SaveStream, save_image

__all__ = [
    "DEFAULT_HOST", "Container", "ContainerInfo", "ContainerSpec", "DockerClient", "EngineInfo",
    "NetworkInfo", "PortBinding", "SaveStream", "VolumeInfo", "connect", "create_container",
    "create_network", "engine_errors", "engine_info", "exec_in", "find_image", "get_file",
    "inspect_container", "inspect_image", "kill_container", "labelled_containers",
    "labelled_networks", "labelled_volumes", "load_image", "pull_image", "put_files",
    "remove_container", "remove_image", "remove_network", "remove_volume", "save_image",
    "split_ref", "start_container", "stop_container", "tag_image",
]
