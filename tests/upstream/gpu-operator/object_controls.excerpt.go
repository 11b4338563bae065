	ServiceMonitorCRDName = "servicemonitors.monitoring.coreos.com"
	// DefaultToolkitInstallDir is the default toolkit installation directory on the host
	DefaultToolkitInstallDir = "/usr/local/nvidia"
	// ToolkitInstallDirEnvName is the name of the toolkit container env for configuring where NVIDIA Container Toolkit is installed
	ToolkitInstallDirEnvName = "ROOT"
	// VgpuDMDefaultConfigMapName indicates name of ConfigMap containing default vGPU devices configuration
	VgpuDMDefaultConfigMapName = "default-vgpu-devices-config"
	// VgpuDMDefaultConfigName indicates name of default configuration in the vGPU devices config file
	VgpuDMDefaultConfigName = "default"
	// NvidiaCtrRuntimeModeEnvName is the name of the toolkit container env for configuring the NVIDIA Container Runtime mode
	NvidiaCtrRuntimeModeEnvName = "NVIDIA_CONTAINER_RUNTIME_MODE"
	// NvidiaCtrRuntimeCDIPrefixesEnvName is the name of toolkit container env for configuring the CDI annotation prefixes
	NvidiaCtrRuntimeCDIPrefixesEnvName = "NVIDIA_CONTAINER_RUNTIME_MODES_CDI_ANNOTATION_PREFIXES"
	// CDIEnabledEnvName is the name of the envvar used to enable CDI in the operands
	CDIEnabledEnvName = "CDI_ENABLED"
	// NvidiaCDIHookPathEnvName is the name of the envvar specifying the path to the 'nvidia-cdi-hook' binary
	NvidiaCDIHookPathEnvName = "NVIDIA_CDI_HOOK_PATH"
	// CRIOConfigModeEnvName is the name of the envvar controlling how the toolkit container updates the cri-o configuration
	CRIOConfigModeEnvName = "CRIO_CONFIG_MODE"
	// DeviceListStrategyEnvName is the name of the envvar for configuring the device-list-strategy in the device-plugin
	DeviceListStrategyEnvName = "DEVICE_LIST_STRATEGY"
	// CDIAnnotationPrefixEnvName is the name of the device-plugin envvar for configuring the CDI annotation prefix
	CDIAnnotationPrefixEnvName = "CDI_ANNOTATION_PREFIX"
	// KataManagerAnnotationHashKey is the annotation indicating the hash of the kata-manager configuration
	KataManagerAnnotationHashKey = "nvidia.com/kata-manager.last-applied-hash"
	// DefaultKataArtifactsDir is the default directory to store kata artifacts on the host
	DefaultKataArtifactsDir = "/opt/nvidia-gpu-operator/artifacts/runtimeclasses/"
	// PodControllerRevisionHashLabelKey is the annotation key for pod controller revision hash value
	PodControllerRevisionHashLabelKey = "controller-revision-hash"
	// DefaultCCModeEnvName is the name of the envvar for configuring default CC mode on all compatible GPUs on the node
	DefaultCCModeEnvName = "DEFAULT_CC_MODE"
	// OpenKernelModulesEnabledEnvName is the name of the driver-container envvar for enabling open GPU kernel module support
	OpenKernelModulesEnabledEnvName = "OPEN_KERNEL_MODULES_ENABLED"
	// KernelModuleTypeEnvName is the name of the driver-container envvar to set the desired kernel module type
	KernelModuleTypeEnvName = "KERNEL_MODULE_TYPE"
	// MPSRootEnvName is the name of the envvar for configuring the MPS root
	MPSRootEnvName = "MPS_ROOT"
	// DefaultMPSRoot is the default MPS root path on the host
	DefaultMPSRoot = "/run/nvidia/mps"
	// HostRootEnvName is the name of the envvar representing the root path of the underlying host
	HostRootEnvName = "HOST_ROOT"
	// DefaultDriverInstallDir represents the default path of a driver container installation
	DefaultDriverInstallDir = "/run/nvidia/driver"
	// DriverInstallDirEnvName is the name of the envvar used by the driver-validator to represent the driver install dir
	DriverInstallDirEnvName = "DRIVER_INSTALL_DIR"
	// DriverInstallDirCtrPathEnvName is the name of the envvar used by the driver-validator to represent the path
	// of the driver install dir mounted in the container
	DriverInstallDirCtrPathEnvName = "DRIVER_INSTALL_DIR_CTR_PATH"
	// NvidiaRuntimeSetAsDefaultEnvName is the name of the toolkit container env for configuring NVIDIA Container Runtime as the default runtime
	NvidiaRuntimeSetAsDefaultEnvName = "NVIDIA_RUNTIME_SET_AS_DEFAULT"
)

// ContainerProbe defines container probe types
// ...
func transformToolkitCtrForCDI(container *corev1.Container) {
	// When CDI is enabled in GPU Operator, we leverage native CDI support in containerd / cri-o
	// to inject GPUs into workloads. We do not configure 'nvidia' as the default runtime. The
	// 'nvidia' runtime will be set as the runtime class for our management containers so that
	// they get access to all GPUs.
	//
	// Note: one could override this and continue to configure 'nvidia' as the default runtime
	// by directly setting the 'NVIDIA_RUNTIME_SET_AS_DEFAULT' environment variable to 'true' in
	// the toolkit container. One can leverage the 'toolkit.env' field in ClusterPolicy to
	// directly configure environment variables for the toolkit container.
	setContainerEnv(container, CDIEnabledEnvName, "true")
	setContainerEnv(container, NvidiaRuntimeSetAsDefaultEnvName, "false")
	setContainerEnv(container, NvidiaCtrRuntimeModeEnvName, "cdi")
	setContainerEnv(container, CRIOConfigModeEnvName, "config")
}

// TransformToolkit transforms Nvidia container-toolkit daemonset with required config as per ClusterPolicy
func TransformToolkit(obj *appsv1.DaemonSet, config *gpuv1.ClusterPolicySpec, n ClusterPolicyController) error {
	toolkitContainerName := "nvidia-container-toolkit-ctr"
	toolkitMainContainer := findContainerByName(obj.Spec.Template.Spec.Containers, toolkitContainerName)
	if toolkitMainContainer == nil {
		return fmt.Errorf("failed to find toolkit container %q", toolkitContainerName)
	}

	// update validation container
	err := transformValidationInitContainer(obj, config)
	if err != nil {
		return err
	}
	// update image
	image, err := gpuv1.ImagePath(&config.Toolkit)
	if err != nil {
		return err
	}
	toolkitMainContainer.Image = image

	// update image pull policy
	toolkitMainContainer.ImagePullPolicy = gpuv1.ImagePullPolicy(config.Toolkit.ImagePullPolicy)

	// set image pull secrets
	if len(config.Toolkit.ImagePullSecrets) > 0 {
		addPullSecrets(&obj.Spec.Template.Spec, config.Toolkit.ImagePullSecrets)
	}

	// set resource limits
	if config.Toolkit.Resources != nil {
		// apply resource limits to all containers
		for i := range obj.Spec.Template.Spec.Containers {
			obj.Spec.Template.Spec.Containers[i].Resources.Requests = config.Toolkit.Resources.Requests
			obj.Spec.Template.Spec.Containers[i].Resources.Limits = config.Toolkit.Resources.Limits
		}
	}

	// update env required for CDI support
	if config.CDI.IsEnabled() {
		transformToolkitCtrForCDI(toolkitMainContainer)
	} else if n.runtime == gpuv1.CRIO {
		// (cdesiniotis) When CDI is not enabled and cri-o is the container runtime,
		// we continue to install the OCI prestart hook as opposed to adding nvidia
		// runtime handlers to the cri-o configuration. Users can override this behavior
		// and have nvidia runtime handlers added to the cri-o configuration by setting
		// the 'CRIO_CONFIG_MODE' environment variable to 'config' in the toolkit container.
		// However, one should note setting 'CRIO_CONFIG_MODE' to 'config' in this case
		// (when CDI is not enabled) would result in the 'nvidia' runtime being set as
		// the default runtime. While this should work in theory, it is a significant
		// change -- which was the primary motivation to continue using the OCI prestart
		// hook by default in this case.
		setContainerEnv(toolkitMainContainer, CRIOConfigModeEnvName, "hook")
	}

	// set install directory for the toolkit
	if config.Toolkit.InstallDir != "" && config.Toolkit.InstallDir != DefaultToolkitInstallDir {
		setContainerEnv(toolkitMainContainer, ToolkitInstallDirEnvName, config.Toolkit.InstallDir)

		for i, volume := range obj.Spec.Template.Spec.Volumes {
			if volume.Name == "toolkit-install-dir" {
				obj.Spec.Template.Spec.Volumes[i].HostPath.Path = config.Toolkit.InstallDir
				break
			}
		}

		for i, volumeMount := range toolkitMainContainer.VolumeMounts {
			if volumeMount.Name == "toolkit-install-dir" {
				toolkitMainContainer.VolumeMounts[i].MountPath = config.Toolkit.InstallDir
				break
			}
		}
	}

	// Update CRI-O hooks path to use default path for non OCP cases
	if n.openshift == "" && n.runtime == gpuv1.CRIO {
		for index, volume := range obj.Spec.Template.Spec.Volumes {
			if volume.Name == "crio-hooks" {
				obj.Spec.Template.Spec.Volumes[index].HostPath.Path = "/usr/share/containers/oci/hooks.d"
			}
		}
	}

	if len(config.Toolkit.Env) > 0 {
		for _, env := range config.Toolkit.Env {
			setContainerEnv(toolkitMainContainer, env.Name, env.Value)
		}
	}

	// configure runtime
	runtime := n.runtime.String()
	err = transformForRuntime(obj, config, runtime, toolkitMainContainer)
	if err != nil {
		return fmt.Errorf("error transforming toolkit daemonset : %w", err)
	}

	return nil
}

func transformForRuntime(obj *appsv1.DaemonSet, config *gpuv1.ClusterPolicySpec, runtime string, container *corev1.Container) error {
	setContainerEnv(container, "RUNTIME", runtime)

	if runtime == gpuv1.Containerd.String() {
		// Set the runtime class name that is to be configured for containerd
		setContainerEnv(container, "CONTAINERD_RUNTIME_CLASS", getRuntimeClassName(config))
	}

	// For runtime config files we have top-level configs and drop-in files.
	// These are supported as follows:
	//   * Docker only supports top-level config files.
	//   * Containerd supports drop-in files, but required modification to the top-level config
	//   * Crio supports drop-in files at a predefined location. The top-level config may be read
	//     but should not be updated.

	// setup mounts for runtime config file
	topLevelConfigFile, dropInConfigFile, err := getRuntimeConfigFiles(container, runtime)
	if err != nil {
		return fmt.Errorf("error getting path to runtime config file: %w", err)
	}

	var configEnvvarName string
	switch runtime {
	case gpuv1.Containerd.String():
		configEnvvarName = "CONTAINERD_CONFIG"
	case gpuv1.Docker.String():
		configEnvvarName = "DOCKER_CONFIG"
	case gpuv1.CRIO.String():
		configEnvvarName = "CRIO_CONFIG"
	}

	// Handle the top-level configs
	if topLevelConfigFile != "" {
		sourceConfigFileName := path.Base(topLevelConfigFile)
		sourceConfigDir := path.Dir(topLevelConfigFile)
		containerConfigDir := DefaultRuntimeConfigTargetDir
		setContainerEnv(container, "RUNTIME_CONFIG", containerConfigDir+sourceConfigFileName)
		setContainerEnv(container, configEnvvarName, containerConfigDir+sourceConfigFileName)

		volMountConfigName := fmt.Sprintf("%s-config", runtime)
		volMountConfig := corev1.VolumeMount{Name: volMountConfigName, MountPath: containerConfigDir}
		container.VolumeMounts = append(container.VolumeMounts, volMountConfig)

		configVol := corev1.Volume{Name: volMountConfigName, VolumeSource: corev1.VolumeSource{HostPath: &corev1.HostPathVolumeSource{Path: sourceConfigDir, Type: ptr.To(corev1.HostPathDirectoryOrCreate)}}}
		obj.Spec.Template.Spec.Volumes = append(obj.Spec.Template.Spec.Volumes, configVol)
	}

	// Handle the drop-in configs
	// TODO: It's a bit of a hack to skip the `nvidia-kata-manager` container here.
	// Ideally if the two projects are using the SAME API then this should be
	// captured more rigorously.
	// Note that we probably want to implement drop-in file support in the
	// kata manager in any case -- in which case it will be good to use a
	// similar implementation.
	if dropInConfigFile != "" && container.Name != "nvidia-kata-manager" {
		sourceConfigFileName := path.Base(dropInConfigFile)
		sourceConfigDir := path.Dir(dropInConfigFile)
		containerConfigDir := DefaultRuntimeDropInConfigTargetDir
		setContainerEnv(container, "RUNTIME_DROP_IN_CONFIG", containerConfigDir+sourceConfigFileName)
		setContainerEnv(container, "RUNTIME_DROP_IN_CONFIG_HOST_PATH", dropInConfigFile)

		volMountConfigName := fmt.Sprintf("%s-drop-in-config", runtime)
		volMountConfig := corev1.VolumeMount{Name: volMountConfigName, MountPath: containerConfigDir}
		container.VolumeMounts = append(container.VolumeMounts, volMountConfig)

		configVol := corev1.Volume{Name: volMountConfigName, VolumeSource: corev1.VolumeSource{HostPath: &corev1.HostPathVolumeSource{Path: sourceConfigDir, Type: ptr.To(corev1.HostPathDirectoryOrCreate)}}}
		obj.Spec.Template.Spec.Volumes = append(obj.Spec.Template.Spec.Volumes, configVol)
	}

	// Handle any additional runtime config sources
	const runtimeConfigSourceFile = "file"
	if runtimeConfigSources := getContainerEnv(container, "RUNTIME_CONFIG_SOURCE"); runtimeConfigSources != "" {
		var sources []string
		for _, runtimeConfigSource := range strings.Split(runtimeConfigSources, ",") {
			parts := strings.SplitN(runtimeConfigSource, "=", 2)
			if len(parts) == 1 || parts[0] != runtimeConfigSourceFile {
				sources = append(sources, runtimeConfigSource)
				continue
			}
			// We transform the host path to a container path by prepending "/host" to the file
			// path. This works because the toolkit container has the host's root filesystem
			// mounted as read-only at "/host"
			sourceConfigFile := filepath.Join("/host", parts[1])
			sources = append(sources, runtimeConfigSourceFile+"="+sourceConfigFile)
		}
		setContainerEnv(container, "RUNTIME_CONFIG_SOURCE", strings.Join(sources, ","))
	}

	// setup mounts for runtime socket file
	runtimeSocketFile, err := getRuntimeSocketFile(container, runtime)
	if err != nil {
		return fmt.Errorf("error getting path to runtime socket: %w", err)
	}
	if runtimeSocketFile != "" {
		sourceSocketFileName := path.Base(runtimeSocketFile)
		// set envvar for runtime socket
		var socketEnvvarName string
		if runtime == gpuv1.Containerd.String() {
			socketEnvvarName = "CONTAINERD_SOCKET"
		} else if runtime == gpuv1.Docker.String() {
			socketEnvvarName = "DOCKER_SOCKET"
		}
		setContainerEnv(container, "RUNTIME_SOCKET", DefaultRuntimeSocketTargetDir+sourceSocketFileName)
		setContainerEnv(container, socketEnvvarName, DefaultRuntimeSocketTargetDir+sourceSocketFileName)

		volMountSocketName := fmt.Sprintf("%s-socket", runtime)
		volMountSocket := corev1.VolumeMount{Name: volMountSocketName, MountPath: DefaultRuntimeSocketTargetDir}
		container.VolumeMounts = append(container.VolumeMounts, volMountSocket)

		socketVol := corev1.Volume{Name: volMountSocketName, VolumeSource: corev1.VolumeSource{HostPath: &corev1.HostPathVolumeSource{Path: path.Dir(runtimeSocketFile)}}}
		obj.Spec.Template.Spec.Volumes = append(obj.Spec.Template.Spec.Volumes, socketVol)
	}
	return nil
}
// ...
func getRuntimeConfigFiles(c *corev1.Container, runtime string) (string, string, error) {
	switch runtime {
	case gpuv1.Docker.String():
		topLevelConfigFile := DefaultDockerConfigFile
		if value := getContainerEnv(c, "DOCKER_CONFIG"); value != "" {
			topLevelConfigFile = value
		} else if value := getContainerEnv(c, "RUNTIME_CONFIG"); value != "" {
			topLevelConfigFile = value
		}
		// Docker does not support drop-in files.
		return topLevelConfigFile, "", nil
	case gpuv1.Containerd.String():
		topLevelConfigFile := DefaultContainerdConfigFile
		if value := getContainerEnv(c, "CONTAINERD_CONFIG"); value != "" {
			topLevelConfigFile = value
		} else if value := getContainerEnv(c, "RUNTIME_CONFIG"); value != "" {
			topLevelConfigFile = value
		}
		dropInConfigFile := DefaultContainerdDropInConfigFile
		if value := getContainerEnv(c, "RUNTIME_DROP_IN_CONFIG"); value != "" {
			dropInConfigFile = value
		}
		return topLevelConfigFile, dropInConfigFile, nil
	case gpuv1.CRIO.String():
		// TODO: We should still allow the top-level config to be specified
		topLevelConfigFile := DefaultCRIOConfigFile
		if value := getContainerEnv(c, "CRIO_CONFIG"); value != "" {
			topLevelConfigFile = value
		} else if value := getContainerEnv(c, "RUNTIME_CONFIG"); value != "" {
			topLevelConfigFile = value
		}
		dropInConfigFile := DefaultCRIODropInConfigFile
		if value := getContainerEnv(c, "RUNTIME_DROP_IN_CONFIG"); value != "" {
			dropInConfigFile = value
		}
		return topLevelConfigFile, dropInConfigFile, nil
	default:
		return "", "", fmt.Errorf("invalid runtime: %s", runtime)
	}
}

// get runtime(docker, containerd) socket file path based on toolkit container env or default
func getRuntimeSocketFile(c *corev1.Container, runtime string) (string, error) {
	var runtimeSocketFile string
	switch runtime {
	case gpuv1.Docker.String():
		runtimeSocketFile = DefaultDockerSocketFile
		if getContainerEnv(c, "DOCKER_SOCKET") != "" {
			runtimeSocketFile = getContainerEnv(c, "DOCKER_SOCKET")
		}
	case gpuv1.Containerd.String():
		runtimeSocketFile = DefaultContainerdSocketFile
		if getContainerEnv(c, "CONTAINERD_SOCKET") != "" {
			runtimeSocketFile = getContainerEnv(c, "CONTAINERD_SOCKET")
		}
	case gpuv1.CRIO.String():
		runtimeSocketFile = ""
	default:
		return "", fmt.Errorf("invalid runtime: %s", runtime)
	}

	return runtimeSocketFile, nil
}
