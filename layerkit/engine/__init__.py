"""The engine: the only package that imports the Docker SDK. Everything else calls these
functions and gets layerkit's own errors (`errors.py`); see each module for its part.

The names are loaded on first use (PEP 562 `__getattr__`), so that importing a module of this
package without the SDK (`unixhttp`, which `layerkit analyze` uses first) does not import the
SDK, slow to import, through this file.
"""

TYPE_CHECKING = False  # not imported from typing: see the module docstring
if TYPE_CHECKING:
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
        ContainerSpec,
        Network,
        create_container,
        create_network,
        exec_in,
        get_file,
        labelled_containers,
        labelled_networks,
        labelled_volumes,
        put_files,
        refresh,
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
    "DEFAULT_HOST", "Container", "ContainerSpec", "DockerClient", "EngineInfo", "Network",
    "SaveStream", "connect", "create_container", "create_network", "engine_errors", "engine_info",
    "exec_in", "find_image", "get_file", "inspect_image", "labelled_containers",
    "labelled_networks", "labelled_volumes", "load_image", "pull_image", "put_files", "refresh",
    "remove_container", "remove_image", "remove_network", "remove_volume", "save_image",
    "split_ref", "start_container", "stop_container", "tag_image",
]

_HOMES = {
    "client": ("DEFAULT_HOST", "DockerClient", "EngineInfo", "connect", "engine_errors",
               "engine_info"),
    "containers": ("Container", "ContainerSpec", "Network", "create_container", "create_network",
                   "exec_in", "get_file", "labelled_containers", "labelled_networks",
                   "labelled_volumes", "put_files", "refresh", "remove_container",
                   "remove_network", "remove_volume", "start_container", "stop_container"),
    "images": ("find_image", "inspect_image", "load_image", "pull_image", "remove_image",
               "split_ref", "tag_image"),
    "save": ("SaveStream", "save_image"),
}
_HOME = {name: module for module, names in _HOMES.items() for name in names}


def __getattr__(name: str) -> object:
    module = _HOME.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(__import__(f"{__name__}.{module}", fromlist=[name]), name)
    globals()[name] = value
    return value
