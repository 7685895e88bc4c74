# Tests of grayd's store (grayd/store/). Included from tests/CMakeLists.txt,
# which has found CMOCKA_LIB; grayd_store comes from grayd/store/.
find_package(PkgConfig REQUIRED)
if(NOT TARGET PkgConfig::SQLITE3)
  pkg_check_modules(SQLITE3 REQUIRED IMPORTED_TARGET sqlite3)
endif()

# Unit tests (cmocka). SQLite directly too: the tests edit a database behind
# the store's back and inject allocation failures into SQLite.
add_executable(test_store ${CMAKE_CURRENT_LIST_DIR}/unit/test_store.c)
target_link_libraries(test_store PRIVATE grayd_store PkgConfig::SQLITE3 ${CMOCKA_LIB})
add_test(NAME unit/store COMMAND test_store)
set_tests_properties(unit/store PROPERTIES LABELS unit)

# Crash durability: a writer killed with SIGKILL at random points, then a
# checker over what it acknowledged.
add_executable(store_crash_writer ${CMAKE_CURRENT_LIST_DIR}/integration/store_crash_writer.c)
target_link_libraries(store_crash_writer PRIVATE grayd_store PkgConfig::SQLITE3)
add_test(NAME integration/store-crash
         COMMAND bash ${CMAKE_CURRENT_LIST_DIR}/integration/store_crash.sh $<TARGET_FILE:store_crash_writer>)
set_tests_properties(integration/store-crash PROPERTIES LABELS integration TIMEOUT 600)
