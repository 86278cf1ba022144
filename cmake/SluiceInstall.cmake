# Install rules: headers, the library, a CMake package (find_package(sluice
# CONFIG) -> sluice::sluice) and a pkg-config file (sluice.pc). The lab's
# library is the optional component `lab` (find_package(sluice COMPONENTS lab)
# -> sluice::lab; sluice-lab.pc), installed beside it with its own export set,
# so that a package installed without it (cmake --install --component) still
# gives sluice::sluice.
include(CMakePackageConfigHelpers)

# Each layer's headers have their own include root in the tree; installed,
# they all go to one include/sluice/.
get_property(_sluice_layers GLOBAL PROPERTY SLUICE_LAYERS)
set(_sluice_layer_targets)
foreach(_layer IN LISTS _sluice_layers)
  install(DIRECTORY include/${_layer}/sluice DESTINATION ${CMAKE_INSTALL_INCLUDEDIR})
  list(APPEND _sluice_layer_targets sluice_${_layer})
endforeach()
install(TARGETS sluice ${_sluice_layer_targets} EXPORT sluiceTargets
        ARCHIVE DESTINATION ${CMAKE_INSTALL_LIBDIR}
        LIBRARY DESTINATION ${CMAKE_INSTALL_LIBDIR}
        INCLUDES DESTINATION ${CMAKE_INSTALL_INCLUDEDIR})
install(EXPORT sluiceTargets NAMESPACE sluice::
        DESTINATION ${CMAKE_INSTALL_LIBDIR}/cmake/sluice)

install(DIRECTORY include/lab/sluice/lab DESTINATION ${CMAKE_INSTALL_INCLUDEDIR}/sluice
        COMPONENT lab)
install(TARGETS sluice_lab EXPORT sluiceLabTargets COMPONENT lab
        ARCHIVE DESTINATION ${CMAKE_INSTALL_LIBDIR}
        LIBRARY DESTINATION ${CMAKE_INSTALL_LIBDIR}
        INCLUDES DESTINATION ${CMAKE_INSTALL_INCLUDEDIR})
install(EXPORT sluiceLabTargets NAMESPACE sluice:: COMPONENT lab
        DESTINATION ${CMAKE_INSTALL_LIBDIR}/cmake/sluice)

configure_package_config_file(cmake/sluiceConfig.cmake.in
    ${CMAKE_CURRENT_BINARY_DIR}/sluiceConfig.cmake
    INSTALL_DESTINATION ${CMAKE_INSTALL_LIBDIR}/cmake/sluice)
write_basic_package_version_file(${CMAKE_CURRENT_BINARY_DIR}/sluiceConfigVersion.cmake
    COMPATIBILITY SameMajorVersion)
install(FILES ${CMAKE_CURRENT_BINARY_DIR}/sluiceConfig.cmake
              ${CMAKE_CURRENT_BINARY_DIR}/sluiceConfigVersion.cmake
        DESTINATION ${CMAKE_INSTALL_LIBDIR}/cmake/sluice)

# pkg-config users get the same library; Abseil's own .pc files carry its
# flags, so they are listed as private requirements.
file(RELATIVE_PATH SLUICE_PC_TO_PREFIX "/${CMAKE_INSTALL_LIBDIR}/pkgconfig" "/")
# A static library per layer, listed from the top layer down (the reverse of
# the order they are defined in) so that each one's undefined symbols are
# found in the ones after it.
set(SLUICE_PC_LIBS)
set(_sluice_top_down ${_sluice_layers})
list(REVERSE _sluice_top_down)
foreach(_layer IN LISTS _sluice_top_down)
  string(APPEND SLUICE_PC_LIBS " -lsluice_${_layer}")
endforeach()
configure_file(cmake/sluice.pc.in ${CMAKE_CURRENT_BINARY_DIR}/sluice.pc @ONLY)
install(FILES ${CMAKE_CURRENT_BINARY_DIR}/sluice.pc
        DESTINATION ${CMAKE_INSTALL_LIBDIR}/pkgconfig)
configure_file(cmake/sluice-lab.pc.in ${CMAKE_CURRENT_BINARY_DIR}/sluice-lab.pc @ONLY)
install(FILES ${CMAKE_CURRENT_BINARY_DIR}/sluice-lab.pc
        DESTINATION ${CMAKE_INSTALL_LIBDIR}/pkgconfig COMPONENT lab)
