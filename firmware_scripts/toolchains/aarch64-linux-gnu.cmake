# Cross-compiling for 64-bit Raspberry Pi OS (Pi 3/4/5, Zero 2 W) and other aarch64 Linux boards.
#   cmake -S . -B build/aarch64 -DCMAKE_TOOLCHAIN_FILE=firmware_scripts/toolchains/aarch64-linux-gnu.cmake
#   cmake --build build/aarch64 && ctest --test-dir build/aarch64   # runs under qemu-aarch64 on x86
# Debian packages: gcc-aarch64-linux-gnu libc6-dev-arm64-cross qemu-user
set(CMAKE_SYSTEM_PROCESSOR aarch64)
set(PF_CROSS_TRIPLE aarch64-linux-gnu)
set(PF_QEMU qemu-aarch64)
include(${CMAKE_CURRENT_LIST_DIR}/linux-cross.cmake)
