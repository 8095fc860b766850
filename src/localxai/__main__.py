from localxai.cli import main

main()
