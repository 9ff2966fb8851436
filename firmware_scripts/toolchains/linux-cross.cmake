# The part of a Linux cross toolchain the Pi toolchains share; they set PF_CROSS_TRIPLE (the Debian cross gcc's
# prefix) and PF_QEMU (the qemu-user program that runs the target's test programs) and include this file.
set(CMAKE_SYSTEM_NAME Linux)
set(CMAKE_C_COMPILER ${PF_CROSS_TRIPLE}-gcc)
set(CMAKE_CXX_COMPILER ${PF_CROSS_TRIPLE}-g++)
set(CMAKE_FIND_ROOT_PATH /usr/${PF_CROSS_TRIPLE})
set(CMAKE_FIND_ROOT_PATH_MODE_PROGRAM NEVER)
set(CMAKE_FIND_ROOT_PATH_MODE_LIBRARY ONLY)
set(CMAKE_FIND_ROOT_PATH_MODE_INCLUDE ONLY)
set(CMAKE_FIND_ROOT_PATH_MODE_PACKAGE ONLY)
# ctest runs the target's test programs through the emulator
find_program(PF_QEMU_PROGRAM ${PF_QEMU} ${PF_QEMU}-static)
if(PF_QEMU_PROGRAM)
  set(CMAKE_CROSSCOMPILING_EMULATOR ${PF_QEMU_PROGRAM};-L;/usr/${PF_CROSS_TRIPLE})
else()
  # building still works (e.g. for copying to a Pi); only ctest on this host needs the emulator
  message(WARNING "${PF_QEMU} not found (Debian package qemu-user): ctest cannot run the ${CMAKE_SYSTEM_PROCESSOR} "
                  "test programs here")
endif()
