# Cross-compiling for 32-bit Raspberry Pi OS (armhf, ARMv7 + NEON/VFPv4: Pi 2 v1.2 and later).
# The NEON intrinsic kernels are aarch64-only; armhf builds the portable kernels, vectorised by GCC for NEON.
#   cmake -S . -B build/armhf -DCMAKE_TOOLCHAIN_FILE=firmware_scripts/toolchains/armhf-linux-gnueabihf.cmake
# Debian packages: gcc-arm-linux-gnueabihf libc6-dev-armhf-cross qemu-user
set(CMAKE_SYSTEM_NAME Linux)
set(CMAKE_SYSTEM_PROCESSOR armv7l)
set(PF_CROSS_TRIPLE arm-linux-gnueabihf)
set(CMAKE_C_COMPILER ${PF_CROSS_TRIPLE}-gcc)
set(CMAKE_CXX_COMPILER ${PF_CROSS_TRIPLE}-g++)
set(CMAKE_C_FLAGS_INIT "-march=armv7-a -mfpu=neon-vfpv4 -mfloat-abi=hard")
set(CMAKE_FIND_ROOT_PATH /usr/${PF_CROSS_TRIPLE})
set(CMAKE_FIND_ROOT_PATH_MODE_PROGRAM NEVER)
set(CMAKE_FIND_ROOT_PATH_MODE_LIBRARY ONLY)
set(CMAKE_FIND_ROOT_PATH_MODE_INCLUDE ONLY)
set(CMAKE_FIND_ROOT_PATH_MODE_PACKAGE ONLY)
find_program(PF_QEMU_ARM qemu-arm qemu-arm-static)
if(PF_QEMU_ARM)
  set(CMAKE_CROSSCOMPILING_EMULATOR ${PF_QEMU_ARM};-L;/usr/${PF_CROSS_TRIPLE})
else()
  # building still works (e.g. for copying to a Pi); only ctest on this host needs the emulator
  message(WARNING "qemu-arm not found (Debian package qemu-user): ctest cannot run the arm test programs here")
endif()
