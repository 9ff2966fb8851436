# Cross-compiling for 64-bit Raspberry Pi OS (Pi 3/4/5, Zero 2 W) and other aarch64 Linux boards.
#   cmake -S . -B build/aarch64 -DCMAKE_TOOLCHAIN_FILE=firmware_scripts/toolchains/aarch64-linux-gnu.cmake
#   cmake --build build/aarch64 && ctest --test-dir build/aarch64   # runs under qemu-aarch64 on x86
# Debian packages: gcc-aarch64-linux-gnu libc6-dev-arm64-cross qemu-user
set(CMAKE_SYSTEM_NAME Linux)
set(CMAKE_SYSTEM_PROCESSOR aarch64)
set(PF_CROSS_TRIPLE aarch64-linux-gnu)
set(CMAKE_C_COMPILER ${PF_CROSS_TRIPLE}-gcc)
set(CMAKE_CXX_COMPILER ${PF_CROSS_TRIPLE}-g++)
set(CMAKE_FIND_ROOT_PATH /usr/${PF_CROSS_TRIPLE})
set(CMAKE_FIND_ROOT_PATH_MODE_PROGRAM NEVER)
set(CMAKE_FIND_ROOT_PATH_MODE_LIBRARY ONLY)
set(CMAKE_FIND_ROOT_PATH_MODE_INCLUDE ONLY)
set(CMAKE_FIND_ROOT_PATH_MODE_PACKAGE ONLY)
# ctest runs the target's test programs through the emulator
find_program(PF_QEMU_AARCH64 qemu-aarch64 qemu-aarch64-static)
if(PF_QEMU_AARCH64)
  set(CMAKE_CROSSCOMPILING_EMULATOR ${PF_QEMU_AARCH64};-L;/usr/${PF_CROSS_TRIPLE})
else()
  # building still works (e.g. for copying to a Pi); only ctest on this host needs the emulator
  message(WARNING "qemu-aarch64 not found (Debian package qemu-user): ctest cannot run the aarch64 test programs here")
endif()
