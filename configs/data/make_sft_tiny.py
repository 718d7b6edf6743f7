"""Writes the small SFT files of the embedded default config:

  sft_tiny_agent.jsonl    SQL-agent conversations in the DBBench text protocol
                          (ShareGPT form), on tables invented here
  sft_tiny_general.jsonl  short general instructions (OpenAI messages form)

Every database result shown in a conversation is what SQLite returns for that
statement on that table, printed as DBBench prints rows (a Python list of
tuples of strings; every column is TEXT). Run from anywhere:

    python configs/data/make_sft_tiny.py
"""

from __future__ import annotations

import json
import os
import sqlite3

HERE = os.path.dirname(os.path.abspath(__file__))

INSTRUCTIONS = (
    "You will answer a question by working with a MySQL database through SQL.\n"
    "Explain your reasoning briefly, then in every round either operate or answer.\n"
    "To operate, write:\n"
    "Action: Operation\n```sql\nSELECT * FROM table WHERE condition;\n```\n"
    "Put exactly one SQL statement on one line inside the sql block; I run only the first block and "
    "reply with its raw output.\n"
    "To answer, write:\n"
    "Action: Answer\nFinal Answer: [\"ANSWER1\", \"ANSWER2\", ...]\n"
    "Answer only when you are sure. For a question about rows, list the values asked for; for a task "
    "that changes the table, operate until it is done and then answer with [\"none\"]."
)

TABLES = {
    "Staff Directory": (
        ["Name", "Department", "Salary", "City"],
        [["Alice Moreau", "Finance", "72000", "Lyon"], ["Bruno Keller", "Sales", "51000", "Basel"],
         ["Chen Wei", "Engineering", "88000", "Lyon"], ["Dana Price", "Sales", "49000", "Leeds"],
         ["Erik Lund", "Engineering", "91000", "Oslo"], ["Fatima Noor", "Finance", "67000", "Leeds"]],
    ),
    "Library Loans": (
        ["Title", "Author", "Year", "Copies"],
        [["Harbour Lights", "M. Osei", "1998", "3"], ["The Salt Road", "J. Varga", "2005", "1"],
         ["Glass Orchard", "M. Osei", "2011", "4"], ["Northern Clocks", "A. Ibsen", "1987", "2"],
         ["Paper Moons", "L. Fontaine", "2019", "5"]],
    ),
    "Planet Facts": (
        ["Planet", "Moons", "Diameter km", "Type"],
        [["Mercury", "0", "4879", "rocky"], ["Venus", "0", "12104", "rocky"], ["Earth", "1", "12742", "rocky"],
         ["Mars", "2", "6779", "rocky"], ["Neptune", "16", "49244", "ice giant"], ["Uranus", "28", "50724", "ice giant"]],
    ),
    "Cycling Results": (
        ["Rider", "Team", "Stage", "Time minutes"],
        [["Ana Ruiz", "Falcon", "1", "182"], ["Ben Okafor", "Comet", "1", "185"], ["Ana Ruiz", "Falcon", "2", "201"],
         ["Ben Okafor", "Comet", "2", "197"], ["Carl Jansen", "Falcon", "1", "190"], ["Carl Jansen", "Falcon", "2", "199"]],
    ),
    "Course Catalog": (
        ["Code", "Course", "Credits", "Teacher"],
        [["CS101", "Intro to Programming", "6", "Ms. Alvarez"], ["CS205", "Databases", "5", "Mr. Haddad"],
         ["MA110", "Linear Algebra", "6", "Dr. Sato"], ["PH120", "Mechanics", "4", "Dr. Sato"],
         ["CS310", "Compilers", "5", "Mr. Haddad"]],
    ),
    "Weather Log": (
        ["Day", "Station", "Rain mm", "High C"],
        [["Monday", "Harbor", "12", "14"], ["Monday", "Hill", "3", "11"], ["Tuesday", "Harbor", "0", "17"],
         ["Tuesday", "Hill", "0", "15"], ["Wednesday", "Harbor", "7", "13"], ["Wednesday", "Hill", "9", "10"]],
    ),
}

# (table, question, [(thought, sql), ...], answer or None for a change task)
TASKS = [
    ("Staff Directory", "Which employees work in the Sales department?",
     [("I need the names of the rows whose Department is Sales.",
       "SELECT `Name` FROM `Staff Directory` WHERE `Department` = 'Sales';")], "rows"),
    ("Staff Directory", "How many employees are based in Lyon?",
     [("Counting the rows with City equal to Lyon answers this.",
       "SELECT COUNT(*) FROM `Staff Directory` WHERE `City` = 'Lyon';")], "rows"),
    ("Staff Directory", "What is the highest salary in the Engineering department?",
     [("I take the maximum Salary among Engineering rows; Salary is text, so I cast it to a number.",
       "SELECT MAX(CAST(`Salary` AS SIGNED)) FROM `Staff Directory` WHERE `Department` = 'Engineering';")], "rows"),
    ("Staff Directory", "Who earns the least?",
     [("Sorting by Salary as a number and keeping the first row gives the lowest earner.",
       "SELECT `Name` FROM `Staff Directory` ORDER BY CAST(`Salary` AS SIGNED) ASC LIMIT 1;")], "rows"),
    ("Staff Directory", "Add a new employee named Gina Rossi in Finance with a salary of 70000, based in Basel.",
     [("This task changes the table: I insert one row with the four given values.",
       "INSERT INTO `Staff Directory` (`Name`, `Department`, `Salary`, `City`) VALUES ('Gina Rossi', 'Finance', '70000', 'Basel');")],
     None),
    ("Staff Directory", "Dana Price moved to Lyon. Update her city.",
     [("I update the City of the row whose Name is Dana Price.",
       "UPDATE `Staff Directory` SET `City` = 'Lyon' WHERE `Name` = 'Dana Price';")], None),
    ("Library Loans", "Which books were written by M. Osei?",
     [("I select the titles whose Author is M. Osei.",
       "SELECT `Title` FROM `Library Loans` WHERE `Author` = 'M. Osei';")], "rows"),
    ("Library Loans", "How many copies are there in total?",
     [("Summing the Copies column gives the total.",
       "SELECT SUM(CAST(`Copies` AS SIGNED)) FROM `Library Loans`;")], "rows"),
    ("Library Loans", "What is the oldest book in the collection?",
     [("The oldest book has the smallest Year.",
       "SELECT `Title` FROM `Library Loans` ORDER BY CAST(`Year` AS SIGNED) ASC LIMIT 1;")], "rows"),
    ("Library Loans", "Which author wrote Paper Moons?",
     [("I look up the Author of the row titled Paper Moons.",
       "SELECT `Author` FROM `Library Loans` WHERE `Title` = 'Paper Moons';")], "rows"),
    ("Library Loans", "The library bought two more copies of The Salt Road. Update its number of copies to 3.",
     [("I set Copies to 3 for The Salt Road.",
       "UPDATE `Library Loans` SET `Copies` = '3' WHERE `Title` = 'The Salt Road';")], None),
    ("Library Loans", "Which books were published after 2000 and have more than 2 copies?",
     [("Two conditions: Year greater than 2000 and Copies greater than 2, both compared as numbers.",
       "SELECT `Title` FROM `Library Loans` WHERE CAST(`Year` AS SIGNED) > 2000 AND CAST(`Copies` AS SIGNED) > 2;")],
     "rows"),
    ("Planet Facts", "Which planet has the most moons?",
     [("I order by Moons as a number, largest first, and keep one row.",
       "SELECT `Planet` FROM `Planet Facts` ORDER BY CAST(`Moons` AS SIGNED) DESC LIMIT 1;")], "rows"),
    ("Planet Facts", "How many rocky planets are listed?",
     [("I count the rows whose Type is rocky.",
       "SELECT COUNT(*) FROM `Planet Facts` WHERE `Type` = 'rocky';")], "rows"),
    ("Planet Facts", "What is the diameter of Mars in km?",
     [("I read the Diameter km value of the Mars row.",
       "SELECT `Diameter km` FROM `Planet Facts` WHERE `Planet` = 'Mars';")], "rows"),
    ("Planet Facts", "Which planets have no moons?",
     [("Planets whose Moons value is 0.",
       "SELECT `Planet` FROM `Planet Facts` WHERE `Moons` = '0';")], "rows"),
    ("Planet Facts", "Add Jupiter: 95 moons, diameter 139820 km, a gas giant.",
     [("I insert one row for Jupiter with the given values.",
       "INSERT INTO `Planet Facts` (`Planet`, `Moons`, `Diameter km`, `Type`) VALUES ('Jupiter', '95', '139820', 'gas giant');")],
     None),
    ("Planet Facts", "Is Uranus larger than Neptune? Give the diameter of the larger one.",
     [("First I look at both diameters.",
       "SELECT `Planet`, `Diameter km` FROM `Planet Facts` WHERE `Planet` IN ('Uranus', 'Neptune');"),
      ("Now I keep only the larger of the two, comparing as numbers.",
       "SELECT MAX(CAST(`Diameter km` AS SIGNED)) FROM `Planet Facts` WHERE `Planet` IN ('Uranus', 'Neptune');")],
     "rows"),
    ("Cycling Results", "What was Ana Ruiz's total time over all stages?",
     [("I sum her Time minutes over her rows.",
       "SELECT SUM(CAST(`Time minutes` AS SIGNED)) FROM `Cycling Results` WHERE `Rider` = 'Ana Ruiz';")], "rows"),
    ("Cycling Results", "Which rider was fastest on stage 2?",
     [("Among stage 2 rows, the smallest time wins.",
       "SELECT `Rider` FROM `Cycling Results` WHERE `Stage` = '2' ORDER BY CAST(`Time minutes` AS SIGNED) ASC LIMIT 1;")],
     "rows"),
    ("Cycling Results", "How many riders does team Falcon have?",
     [("A rider appears once per stage, so I count distinct riders of Falcon.",
       "SELECT COUNT(DISTINCT `Rider`) FROM `Cycling Results` WHERE `Team` = 'Falcon';")], "rows"),
    ("Cycling Results", "What was the average stage time of Ben Okafor?",
     [("I average his times as numbers.",
       "SELECT AVG(CAST(`Time minutes` AS SIGNED)) FROM `Cycling Results` WHERE `Rider` = 'Ben Okafor';")], "rows"),
    ("Cycling Results", "Carl Jansen's stage 1 time was wrong; it should be 188 minutes. Fix it.",
     [("I update the row of Carl Jansen on stage 1.",
       "UPDATE `Cycling Results` SET `Time minutes` = '188' WHERE `Rider` = 'Carl Jansen' AND `Stage` = '1';")], None),
    ("Cycling Results", "Which team does Ben Okafor ride for?",
     [("Any of his rows shows the team.",
       "SELECT DISTINCT `Team` FROM `Cycling Results` WHERE `Rider` = 'Ben Okafor';")], "rows"),
    ("Course Catalog", "Which courses does Dr. Sato teach?",
     [("I list the Course values where Teacher is Dr. Sato.",
       "SELECT `Course` FROM `Course Catalog` WHERE `Teacher` = 'Dr. Sato';")], "rows"),
    ("Course Catalog", "How many credits is Databases worth?",
     [("I read Credits for the Databases row.",
       "SELECT `Credits` FROM `Course Catalog` WHERE `Course` = 'Databases';")], "rows"),
    ("Course Catalog", "What is the total number of credits of all CS courses?",
     [("CS courses have codes starting with CS; I sum their credits.",
       "SELECT SUM(CAST(`Credits` AS SIGNED)) FROM `Course Catalog` WHERE `Code` LIKE 'CS%';")], "rows"),
    ("Course Catalog", "Add the course ST200 Statistics, 5 credits, taught by Ms. Alvarez.",
     [("I insert the new course row.",
       "INSERT INTO `Course Catalog` (`Code`, `Course`, `Credits`, `Teacher`) VALUES ('ST200', 'Statistics', '5', 'Ms. Alvarez');")],
     None),
    ("Course Catalog", "Which course has the code MA110?",
     [("I look up the Course for code MA110.",
       "SELECT `Course` FROM `Course Catalog` WHERE `Code` = 'MA110';")], "rows"),
    ("Course Catalog", "How many different teachers are there?",
     [("I count the distinct values of Teacher.",
       "SELECT COUNT(DISTINCT `Teacher`) FROM `Course Catalog`;")], "rows"),
    ("Weather Log", "How much rain fell at the Harbor station in total?",
     [("I sum Rain mm over the Harbor rows.",
       "SELECT SUM(CAST(`Rain mm` AS SIGNED)) FROM `Weather Log` WHERE `Station` = 'Harbor';")], "rows"),
    ("Weather Log", "On which days was there no rain at the Hill station?",
     [("Hill rows whose Rain mm is 0.",
       "SELECT `Day` FROM `Weather Log` WHERE `Station` = 'Hill' AND `Rain mm` = '0';")], "rows"),
    ("Weather Log", "What was the warmest high temperature recorded?",
     [("The maximum of High C, as a number.",
       "SELECT MAX(CAST(`High C` AS SIGNED)) FROM `Weather Log`;")], "rows"),
    ("Weather Log", "Which station was colder on Wednesday?",
     [("On Wednesday, the station with the lower High C was colder.",
       "SELECT `Station` FROM `Weather Log` WHERE `Day` = 'Wednesday' ORDER BY CAST(`High C` AS SIGNED) ASC LIMIT 1;")],
     "rows"),
    ("Weather Log", "The Hill station's Tuesday high was actually 16. Correct the log.",
     [("I update High C of the Hill row for Tuesday.",
       "UPDATE `Weather Log` SET `High C` = '16' WHERE `Day` = 'Tuesday' AND `Station` = 'Hill';")], None),
    ("Weather Log", "How many readings had more than 5 mm of rain?",
     [("I count rows with Rain mm above 5, as numbers.",
       "SELECT COUNT(*) FROM `Weather Log` WHERE CAST(`Rain mm` AS SIGNED) > 5;")], "rows"),
]

GENERAL = [
    ("What is 17 plus 25?", "17 plus 25 is 42."),
    ("Name the three primary colors of light.", "The primary colors of light are red, green and blue."),
    ("Give me a synonym for 'quick'.", "A synonym for 'quick' is 'fast'."),
    ("What does SQL stand for?", "SQL stands for Structured Query Language."),
    ("Translate 'good morning' into French.", "'Good morning' in French is 'bonjour'."),
    ("How many days are there in a leap year?", "A leap year has 366 days."),
    ("Write one sentence about the sea.", "The sea stretched grey and calm to the edge of the sky."),
    ("What is the capital of Japan?", "The capital of Japan is Tokyo."),
    ("Sort these numbers from smallest to largest: 9, 2, 7, 4.", "From smallest to largest: 2, 4, 7, 9."),
    ("What is a primary key in a database table?",
     "A primary key is a column, or set of columns, whose value identifies each row of a table uniquely."),
    ("Explain what a list is in Python in one sentence.",
     "A Python list is an ordered, changeable collection of values written in square brackets."),
    ("What is the opposite of 'ancient'?", "The opposite of 'ancient' is 'modern'."),
    ("Convert 3 kilometers to meters.", "3 kilometers are 3000 meters."),
    ("Give two examples of mammals.", "Two examples of mammals are the dolphin and the horse."),
    ("What does the WHERE clause do in a SELECT statement?",
     "The WHERE clause keeps only the rows that satisfy its condition."),
    ("Summarize in five words: The meeting was moved from Monday to Thursday because the room was booked.",
     "Meeting moved to Thursday, room booked."),
    ("What is 9 times 8?", "9 times 8 is 72."),
    ("Which is heavier, a kilogram of iron or a kilogram of feathers?",
     "Neither: both weigh one kilogram."),
    ("Suggest a name for a small bakery.", "How about 'The Warm Crust'?"),
    ("What is the boiling point of water at sea level in Celsius?",
     "At sea level, water boils at 100 degrees Celsius."),
]


def rows_text(rows) -> str:
    """Rows as DBBench prints them: a Python list of tuples."""
    return repr([tuple(str(v) if v is not None else None for v in row) for row in rows])


def answer_values(rows) -> list[str]:
    values = []
    for row in rows:
        for v in row:
            values.append(str(int(v)) if isinstance(v, float) and v.is_integer() else str(v))
    return values


def to_sqlite(sql: str) -> str:
    return sql.replace("AS SIGNED", "AS INTEGER")


def run_task(table, question, steps, kind):
    columns, data = TABLES[table]
    db = sqlite3.connect(":memory:")
    db.execute(f"CREATE TABLE `{table}` ({', '.join(f'`{c}` TEXT' for c in columns)})")
    db.executemany(f"INSERT INTO `{table}` VALUES ({', '.join('?' * len(columns))})", data)
    turns = [
        {"from": "human", "value": INSTRUCTIONS},
        {"from": "gpt", "value": "Ok.", "loss": False},
        {"from": "human", "value": f"{question}\nThe name of this table is {table}, and the headers of this table "
                                   f"are {','.join(columns)}."},
    ]
    rows = []
    for thought, sql in steps:
        rows = db.execute(to_sqlite(sql)).fetchall()
        turns.append({"from": "gpt", "value": f"{thought}\nAction: Operation\n```sql\n{sql}\n```"})
        turns.append({"from": "human", "value": rows_text(rows)})
    if kind is None:
        final = ["none"]
        closing = "The change is made."
    else:
        final = answer_values(rows)
        closing = "The output answers the question."
    turns.append({"from": "gpt", "value": f"{closing}\nAction: Answer\nFinal Answer: {json.dumps(final)}"})
    return {"conversations": turns}


def main():
    with open(os.path.join(HERE, "sft_tiny_agent.jsonl"), "w", encoding="utf-8") as f:
        for task in TASKS:
            f.write(json.dumps(run_task(*task), ensure_ascii=False) + "\n")
    with open(os.path.join(HERE, "sft_tiny_general.jsonl"), "w", encoding="utf-8") as f:
        for question, answer in GENERAL:
            record = {"messages": [{"role": "user", "content": question}, {"role": "assistant", "content": answer}]}
            f.write(json.dumps(record, ensure_ascii=False) + "\n")
    print(f"wrote {len(TASKS)} agent and {len(GENERAL)} general conversations to {HERE}")


if __name__ == "__main__":
    main()
