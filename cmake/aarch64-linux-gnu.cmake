# Cross-compiling for arm64 (aarch64) Linux with Debian's cross toolchain
# (gcc-aarch64-linux-gnu) against the arm64 multiarch -dev packages
# (dpkg --add-architecture arm64; tools/install-deps installs both).
# There is no sysroot: Debian's multiarch layout keeps the arm64 libraries in
# /usr/lib/aarch64-linux-gnu and the arch-specific headers in
# /usr/include/aarch64-linux-gnu, both on the cross compiler's search path.
#   cmake -S . -B build-arm64 --toolchain cmake/aarch64-linux-gnu.cmake -DBF_DEVICE_ONLY=ON -DBF_NATIVE=OFF
# (tools/build-arm64 does this.)
set(CMAKE_SYSTEM_NAME Linux)
set(CMAKE_SYSTEM_PROCESSOR aarch64)
set(CMAKE_C_COMPILER aarch64-linux-gnu-gcc)
set(CMAKE_LIBRARY_ARCHITECTURE aarch64-linux-gnu)
# find_library/find_path look in the multiarch directories above; programs
# (pkg-config) are the build machine's.
set(CMAKE_FIND_ROOT_PATH_MODE_PROGRAM NEVER)
# pkg-config must read the arm64 .pc files only, never the amd64 ones.
set(ENV{PKG_CONFIG_LIBDIR} /usr/lib/aarch64-linux-gnu/pkgconfig:/usr/share/pkgconfig)
set(ENV{PKG_CONFIG_PATH} "")
# Running an arm64 program on the build machine (try_run, tests): qemu-user,
# with the cross libc's loader.
set(CMAKE_CROSSCOMPILING_EMULATOR qemu-aarch64 -L /usr/aarch64-linux-gnu)
