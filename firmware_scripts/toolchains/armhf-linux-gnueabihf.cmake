# Cross-compiling for 32-bit Raspberry Pi OS (armhf, ARMv7 + NEON/VFPv4: Pi 2 v1.2 and later).
# The NEON intrinsic kernels are aarch64-only; armhf builds the portable kernels, vectorised by GCC for NEON.
#   cmake -S . -B build/armhf -DCMAKE_TOOLCHAIN_FILE=firmware_scripts/toolchains/armhf-linux-gnueabihf.cmake
# Debian packages: gcc-arm-linux-gnueabihf libc6-dev-armhf-cross qemu-user
set(CMAKE_SYSTEM_PROCESSOR armv7l)
set(PF_CROSS_TRIPLE arm-linux-gnueabihf)
set(PF_QEMU qemu-arm)
set(CMAKE_C_FLAGS_INIT "-march=armv7-a -mfpu=neon-vfpv4 -mfloat-abi=hard")
include(${CMAKE_CURRENT_LIST_DIR}/linux-cross.cmake)
