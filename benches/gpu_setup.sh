# Sourced by the benches/gpu_*.sh one-shot GPU scripts (run from the repository root on the lent
# machine): unpack the Vulkan loader .debs from .gl/, point Vulkan at NVIDIA's ICD, unpack the
# stripped, xz-packed release binary .dev/varphi.xz to /tmp/varphi and record the GPU in $OUT.
for f in .gl/*.deb; do dpkg -x $f /; done; ldconfig
ldconfig -p | grep -q libvulkan || echo "no libvulkan"
[ -e /usr/share/vulkan/icd.d/nvidia_icd.json ] || export VK_DRIVER_FILES=/usr/local/nvidia/share/vulkan/icd.d/nvidia_icd.json
xz -d -c .dev/varphi.xz > /tmp/varphi && chmod +x /tmp/varphi
export XDG_RUNTIME_DIR=/tmp
nvidia-smi -L 2>&1 | tee $OUT/gpu.txt
