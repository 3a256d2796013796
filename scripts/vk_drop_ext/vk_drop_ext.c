/* A Vulkan layer that removes VK_KHR_external_semaphore_fd from vkCreateDevice's enabled extensions.
 *
 * sapien 2.2.2 (SimplerEnv's renderer) always asks for that extension, for CUDA interop it does not use
 * when rendering to host memory; Mesa's lavapipe (the CPU Vulkan driver) does not have it, so device
 * creation fails with VK_ERROR_EXTENSION_NOT_PRESENT. Everything else passes through unchanged.
 *
 * Built and enabled by scripts/setup_simpler.sh (explicit layer, VK_INSTANCE_LAYERS); the loader interface
 * is the one of the Vulkan-Loader's LoaderLayerInterface.md (vkNegotiateLoaderLayerInterfaceVersion, v2).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <vulkan/vk_layer.h>
#include <vulkan/vulkan.h>

#define EXPORT __attribute__((visibility("default")))

static const char *DROPPED = "VK_KHR_external_semaphore_fd";

/* One next-layer entry point of each kind suffices: the loader hands every instance and device the same
 * chain below this layer. */
static PFN_vkGetInstanceProcAddr next_instance_proc;
static PFN_vkGetDeviceProcAddr next_device_proc;

static VkLayerInstanceCreateInfo *instance_link(const VkInstanceCreateInfo *info) {
    VkLayerInstanceCreateInfo *c = (VkLayerInstanceCreateInfo *)info->pNext;
    while (c && !(c->sType == VK_STRUCTURE_TYPE_LOADER_INSTANCE_CREATE_INFO && c->function == VK_LAYER_LINK_INFO))
        c = (VkLayerInstanceCreateInfo *)c->pNext;
    return c;
}

static VkLayerDeviceCreateInfo *device_link(const VkDeviceCreateInfo *info) {
    VkLayerDeviceCreateInfo *c = (VkLayerDeviceCreateInfo *)info->pNext;
    while (c && !(c->sType == VK_STRUCTURE_TYPE_LOADER_DEVICE_CREATE_INFO && c->function == VK_LAYER_LINK_INFO))
        c = (VkLayerDeviceCreateInfo *)c->pNext;
    return c;
}

static VKAPI_ATTR VkResult VKAPI_CALL drop_CreateInstance(const VkInstanceCreateInfo *info,
                                                          const VkAllocationCallbacks *alloc, VkInstance *out) {
    VkLayerInstanceCreateInfo *link = instance_link(info);
    if (!link) return VK_ERROR_INITIALIZATION_FAILED;
    next_instance_proc = link->u.pLayerInfo->pfnNextGetInstanceProcAddr;
    link->u.pLayerInfo = link->u.pLayerInfo->pNext; /* the next layer finds its own link */
    PFN_vkCreateInstance create = (PFN_vkCreateInstance)next_instance_proc(VK_NULL_HANDLE, "vkCreateInstance");
    return create(info, alloc, out);
}

static VKAPI_ATTR VkResult VKAPI_CALL drop_CreateDevice(VkPhysicalDevice gpu, const VkDeviceCreateInfo *info,
                                                        const VkAllocationCallbacks *alloc, VkDevice *out) {
    VkLayerDeviceCreateInfo *link = device_link(info);
    if (!link) return VK_ERROR_INITIALIZATION_FAILED;
    PFN_vkGetInstanceProcAddr gipa = link->u.pLayerInfo->pfnNextGetInstanceProcAddr;
    next_device_proc = link->u.pLayerInfo->pfnNextGetDeviceProcAddr;
    link->u.pLayerInfo = link->u.pLayerInfo->pNext;

    const char **names = malloc(sizeof(char *) * (info->enabledExtensionCount + 1));
    if (!names) return VK_ERROR_OUT_OF_HOST_MEMORY;
    uint32_t kept = 0;
    for (uint32_t i = 0; i < info->enabledExtensionCount; i++) {
        if (strcmp(info->ppEnabledExtensionNames[i], DROPPED) == 0) {
            if (getenv("WORLDFLOW_VK_DROP_EXT_VERBOSE")) fprintf(stderr, "vk_drop_ext: dropped %s\n", DROPPED);
            continue;
        }
        names[kept++] = info->ppEnabledExtensionNames[i];
    }
    VkDeviceCreateInfo filtered = *info;
    filtered.enabledExtensionCount = kept;
    filtered.ppEnabledExtensionNames = names;
    PFN_vkCreateDevice create = (PFN_vkCreateDevice)gipa(VK_NULL_HANDLE, "vkCreateDevice");
    VkResult res = create(gpu, &filtered, alloc, out);
    free(names); /* the driver copies what it keeps */
    return res;
}

EXPORT VKAPI_ATTR PFN_vkVoidFunction VKAPI_CALL drop_GetDeviceProcAddr(VkDevice device, const char *name) {
    if (strcmp(name, "vkGetDeviceProcAddr") == 0) return (PFN_vkVoidFunction)drop_GetDeviceProcAddr;
    return next_device_proc ? next_device_proc(device, name) : NULL;
}

EXPORT VKAPI_ATTR PFN_vkVoidFunction VKAPI_CALL drop_GetInstanceProcAddr(VkInstance instance, const char *name) {
    if (strcmp(name, "vkGetInstanceProcAddr") == 0) return (PFN_vkVoidFunction)drop_GetInstanceProcAddr;
    if (strcmp(name, "vkCreateInstance") == 0) return (PFN_vkVoidFunction)drop_CreateInstance;
    if (strcmp(name, "vkCreateDevice") == 0) return (PFN_vkVoidFunction)drop_CreateDevice;
    if (strcmp(name, "vkGetDeviceProcAddr") == 0) return (PFN_vkVoidFunction)drop_GetDeviceProcAddr;
    return next_instance_proc ? next_instance_proc(instance, name) : NULL;
}

EXPORT VKAPI_ATTR VkResult VKAPI_CALL vkNegotiateLoaderLayerInterfaceVersion(VkNegotiateLayerInterface *v) {
    if (v->loaderLayerInterfaceVersion < 2) return VK_ERROR_INITIALIZATION_FAILED;
    v->loaderLayerInterfaceVersion = 2;
    v->pfnGetInstanceProcAddr = drop_GetInstanceProcAddr;
    v->pfnGetDeviceProcAddr = drop_GetDeviceProcAddr;
    v->pfnGetPhysicalDeviceProcAddr = NULL;
    return VK_SUCCESS;
}
