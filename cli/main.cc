// adjutant: the command line for adjutantd (see cli/commands.h).
#include <cstdlib>
#include <iostream>
#include <optional>
#include <string>
#include <vector>

#include "cli/commands.h"

int main(int argc, char** argv) {
  std::vector<std::string> args(argv + 1, argv + argc);
  return adjutant::cli::RunCli(args, adjutant::cli::CliEnvironmentFromProcess(),
                               std::cin, std::cout, std::cerr);
}
